"""Regenerate the figures README.rst shows (``make docs-figures``; ``make docs-figures-quick``).

Each figure in ``docs/`` belongs to one group:

* ``quick`` (seconds): ``demo_mge.png``, the demo's first step (the NGC 4697-like Nuker MGE);
* ``validation`` (minutes): the figures of three validation scripts, run with the arguments the
  README quotes, copied from ``validation/out/``;
* ``demo`` (the full demo fit, ~9 minutes on two cores): ``nuker-mge demo --out DEMO_OUT`` (it
  resumes a finished or interrupted fit in DEMO_OUT), then its figures are copied here;
* ``real`` (~20 minutes): the image-plane fit of the CARMA cube of NGC 4324,
  ``validation/ngc4324_fit.py --resume`` (the cube stays in ../shared/data; a finished fit is
  only reloaded), then its figures;
* ``calibration`` (~3 hours on two cores): the full-sampler calibration study, 40 fits as one
  ``nuker-mge survey`` (``validation/calibration.py --n 20 --survey 2``; it skips finished fits
  and resumes interrupted ones), then its coverage plot;
* ``sbc`` (~1 hour on two cores): the simulation-based calibration (M14), 100 replicates of the
  quick configuration (``validation/sbc.py --n 100``; it skips finished replicates), then its rank
  histograms.

``python docs/make_figures.py quick validation demo real calibration sbc`` does everything; ``--list``
prints the table. Every copy is atomic, so an interrupted run leaves the previous figure in place.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
VALIDATION_OUT = os.path.join(ROOT, "validation", "out")

#: README figure -> (group, how it is made: a validation command or the demo's file)
FIGURES = {
    "demo_mge.png": ("quick", None),
    "emulator_accuracy_nn.png": ("validation", ["validation/emulator_accuracy.py", "--backend", "nn", "--n",
                                                "10000", "--seed", "1"]),
    "vcirc_vs_jampy.png": ("validation", ["validation/vcirc_vs_jampy.py", "--backend", "exact", "--seed", "1"]),
    "cube_vs_kinms_ngc4697.png": ("validation", ["validation/cube_vs_kinms.py", "--parts", "cases"]),
    "demo_fit_mbh.png": ("demo", "fit/mbh.png"),
    "demo_fit_maps.png": ("demo", "fit/maps.png"),
    "demo_fit_vcirc.png": ("demo", "fit/vcirc.png"),
    "ngc4324_maps.png": ("real", "maps.png"),
    "ngc4324_pv.png": ("real", "pv.png"),
    "calibration.png": ("calibration", "calibration.png"),
    "sbc.png": ("sbc", "sbc.png"),
}
GROUPS = ("quick", "validation", "demo", "real", "calibration", "sbc")
#: The real-data fit behind the ``real`` group (it reads ../shared/data/NGC4324_CO10_CARMA.fits).
REAL = ["validation/ngc4324_fit.py", "--resume", "--out", os.path.join(VALIDATION_OUT, "ngc4324")]
#: The calibration study behind the ``calibration`` group (the README quotes its output).
CALIBRATION = ["validation/calibration.py", "--n", "20", "--survey", "2", "--out",
               os.path.join(VALIDATION_OUT, "calibration_survey")]
#: The simulation-based calibration behind the ``sbc`` group (docs/validation.rst quotes its output).
SBC = ["validation/sbc.py", "--n", "100", "--out", os.path.join(VALIDATION_OUT, "sbc")]


def _install(src, name):
    """Copy ``src`` to docs/``name`` through a temporary file."""
    dest = os.path.join(DOCS, name)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part.png", dir=DOCS)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    shown = os.path.relpath(src, ROOT) if os.path.abspath(src).startswith(ROOT) else os.path.basename(src)
    print(f"docs/{name} <- {shown}")


def make_demo_mge(name="demo_mge.png"):
    """The demo's step 1, drawn exactly as ``nuker-mge demo`` draws it."""
    import contextlib
    import io

    from nuker_mge_plugin.cli import DEMO, DEMO_MGE_TITLE, _convert

    a = argparse.Namespace(**{k: v for k, v in DEMO.items() if k not in ("inc", "mbh")}, backend="exact")
    with tempfile.TemporaryDirectory() as tmp:
        png = os.path.join(tmp, name)
        with contextlib.redirect_stdout(io.StringIO()):
            _convert(a, os.path.join(tmp, "mge.txt"), DEMO["inc"], DEMO["mbh"], png, title=DEMO_MGE_TITLE)
        _install(png, name)


def run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("groups", nargs="*", metavar="GROUP", help=f"which figures: {', '.join(GROUPS)} (default: all)")
    p.add_argument("--demo-out", default="demo_out", help="the demo's output folder")
    p.add_argument("--list", action="store_true", help="print the figures and their groups, and stop")
    a = p.parse_args(argv)
    unknown = sorted(set(a.groups) - set(GROUPS))
    if unknown:  # (argparse's choices= refuses an empty list with nargs="*" on Python 3.11)
        p.error(f"unknown group(s) {', '.join(unknown)}: choose from {', '.join(GROUPS)}")
    if a.list:
        for name, (group, how) in FIGURES.items():
            how = " ".join(how) if isinstance(how, list) else how or "demo step 1"
            print(f"{group:12s} docs/{name:28s} {how}")
        return 0
    groups = a.groups or list(GROUPS)
    if "quick" in groups:
        make_demo_mge()
    if "validation" in groups:
        for name, (group, cmd) in FIGURES.items():
            if group == "validation":
                run([sys.executable, *cmd, "--out", VALIDATION_OUT])
                _install(os.path.join(VALIDATION_OUT, name), name)
    if "demo" in groups:
        run([sys.executable, "-m", "nuker_mge_plugin.cli", "demo", "--out", a.demo_out, "--no-progress"])
        for name, (group, src) in FIGURES.items():
            if group == "demo":
                _install(os.path.join(ROOT, a.demo_out, src), name)
        _install(os.path.join(ROOT, a.demo_out, "ngc4697_like_mge.png"), "demo_mge.png")
    # one run each, its figures from its --out
    for run_group, cmd in (("real", REAL), ("calibration", CALIBRATION), ("sbc", SBC)):
        if run_group in groups:
            run([sys.executable, *cmd])
            for name, (group, src) in FIGURES.items():
                if group == run_group:
                    _install(os.path.join(cmd[-1], src), name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
