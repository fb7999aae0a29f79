# Two entry points for a fresh clone (see README.rst):
#   make demo   -- set up .venv and run the main job (the NGC 4697-like demo)
#   make test   -- set up .venv and run the test suite
PYTHON ?= python3.11
VENV ?= .venv
CONSTRAINTS ?= compat/py311-jampy8-kinms3.txt
EXTRAS ?= test,fitter,inference
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test venv clean compat wheel-check

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) --editable '.[$(EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nuker-mge demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .venv-compat $(DEMO_OUT) build dist *.egg-info

# Host-version matrix: one fresh venv per compat/*.txt, one line per combination.
wheel-check: $(STAMP)
	bash compat/check_wheel.sh

compat: $(STAMP)
	$(BIN)/python compat/run_matrix.py
