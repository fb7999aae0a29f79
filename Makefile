# Two entry points for a fresh clone (see README.rst):
#   make demo   -- set up .venv and run the main job (the NGC 4697-like demo)
#   make test   -- set up .venv, run the linter (ruff), build the docs, then the test suite
# and, for maintainers:
#   make docs                -- the Sphinx docs as HTML in docs/_build/html (warnings are errors)
#   make docs-figures        -- regenerate every figure README.rst and the docs show (the ~9-minute demo fit, the NGC 4324 fit, the ~3-hour calibration survey, the ~1-hour SBC; all resume)
#   make docs-figures-quick  -- only the ones that take seconds (docs/demo_mge.png)
PYTHON ?= python3.11
VENV ?= .venv
CONSTRAINTS ?= compat/py311-jampy8-kinms3.txt
EXTRAS ?= test,fitter,inference,survey,ms,docs
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test lint docs venv clean compat wheel-check docs-figures docs-figures-quick

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) --editable '.[$(EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nuker-mge demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/python -m ruff check .

# The docs build (docs/conf.py): every warning of a page is an error; seconds once built.
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# pytest's options (--strict-markers among them) live in setup.cfg [tool:pytest]
test: lint docs
	$(BIN)/python -m pytest -q

docs-figures: $(STAMP)
	$(BIN)/python docs/make_figures.py quick validation demo real calibration sbc --demo-out $(DEMO_OUT)

docs-figures-quick: $(STAMP)
	$(BIN)/python docs/make_figures.py quick

clean:
	rm -rf $(VENV) .venv-compat $(DEMO_OUT) build dist *.egg-info docs/_build

# Host-version matrix: one fresh venv per compat/*.txt, one line per combination.
wheel-check: $(STAMP)
	bash compat/check_wheel.sh

compat: $(STAMP)
	$(BIN)/python compat/run_matrix.py
