"""Run the test suite once per supported host-version combination (one compat/*.txt each).

    python compat/run_matrix.py              # every combination
    python compat/run_matrix.py py311-jampy7-kinms2

Each combination gets a fresh virtual environment under .venv-compat/NAME built with the
constraints file (its header says which Python and extras); the log is .venv-compat/NAME.log.
Prints one line per combination and exits non-zero if any failed.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
VENVS = os.path.join(ROOT, ".venv-compat")


def header(path):
    meta = {}
    for line in open(path):
        if line.startswith("# ") and ":" in line:
            key, _, value = line[2:].partition(":")
            if key.strip() in ("python", "extras", "mode"):
                meta[key.strip()] = value.strip()
    return meta


def find_python(version):
    # pyenv's shims exist for every installed version but refuse to run unless selected,
    # so prefer the interpreters themselves and check that a candidate really starts.
    cands = [*sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python"))),
             shutil.which(f"python{version}")]
    for cand in cands:
        if cand and subprocess.run([cand, "-c", "pass"], capture_output=True).returncode == 0:
            return cand
    return None


def sh(cmd, log):
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode


def hosts_check(python, log):
    out = subprocess.run([python, os.path.join(ROOT, "compat", "check_hosts.py")], cwd=ROOT,
                         capture_output=True, text=True)
    with open(log, "a") as f:
        f.write(out.stdout + out.stderr)
    return json.loads(out.stdout) if out.returncode == 0 else None


def run(name):
    path = os.path.join(ROOT, "compat", name + ".txt")
    meta = header(path)
    python = find_python(meta["python"])
    if python is None:
        return f"{name}: SKIPPED (no Python {meta['python']} on this machine)", True
    venv, log = os.path.join(VENVS, name), os.path.join(VENVS, name + ".log")
    shutil.rmtree(venv, ignore_errors=True)
    os.makedirs(VENVS, exist_ok=True)
    open(log, "w").close()
    vpy = os.path.join(venv, "bin", "python")
    hosts_only = meta.get("mode") == "hosts-only" and not os.environ.get("COMPAT_FULL")
    if sh([python, "-m", "venv", venv], log):
        return f"{name}: FAILED to create the venv (see {log})", False
    if hosts_only:
        pins = [ln.strip() for ln in open(path) if ln.strip() and not ln.startswith("#")
                and ln.split("==")[0] in ("jampy", "plotbin", "capfit", "kinms", "numpy", "scipy", "matplotlib",
                                          "astropy")]
        if sh([vpy, "-m", "pip", "install", "-q", *pins], log):
            return f"{name}: INSTALL FAILED (see {log})", False
        ours, ref = hosts_check(vpy, log), hosts_check(sys.executable, log)
        if ours is None or ref is None:
            return f"{name}: HOST CHECK FAILED (see {log})", False
        dv = max(abs(a / b - 1) for a, b in zip(ours["jampy_vcirc_kms"], ref["jampy_vcirc_kms"]))
        # jampy integrates at epsrel = 1e-5, and its versions differ at that level (seen: 3.7e-5).
        ok = dv < 1e-4 and ours["kinms_shape"] == ref["kinms_shape"] and abs(ours["kinms_flux"] / 10 - 1) < 0.01
        return (f"{name}: hosts-only {'OK' if ok else 'MISMATCH'} (Python {ours['python']}, jampy vcirc within "
                f"{dv:.1e} of the default combination, KinMS {ours['kinms_major']}.x cube flux "
                f"{ours['kinms_flux']:.3f}/10; torch suite not run: no CPU torch wheel for this Python here)"), ok
    if sh([vpy, "-m", "pip", "install", "-q", "-c", path, "-e", f".[{meta.get('extras', 'test')}]"], log):
        return f"{name}: INSTALL FAILED (see {log})", False
    res = subprocess.run([vpy, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True,
                         text=True)
    with open(log, "a") as f:
        f.write(res.stdout + res.stderr)
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    versions = subprocess.run([vpy, "-c", "import importlib.metadata as m; print(', '.join(p + ' ' + m.version(p) "
                               "for p in ('jampy', 'kinms', 'numpy', 'torch')))"], capture_output=True,
                              text=True).stdout.strip()
    return f"{name}: {lines[-1] if lines else 'no output'} [{versions}]", res.returncode == 0


def main(argv):
    names = argv or sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(ROOT, "compat", "*.txt")))
    ok_all = True
    for name in names:
        line, ok = run(name)
        ok_all &= ok
        print(line, flush=True)
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
