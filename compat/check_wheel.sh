#!/usr/bin/env bash
# Build the sdist and wheel, install the wheel into a fresh venv outside the source tree, and
# smoke-test it there: the console script, the exact backend, and the shipped nn emulator
# (TorchScript artifact and state_dict fallback both inside the wheel).
#   usage: compat/check_wheel.sh [PYTHON]   (needs the project's .venv for 'build')
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3.11}
CONSTRAINTS=${CONSTRAINTS:-compat/py311-jampy8-kinms3.txt}
work=$(mktemp -d /tmp/nuker-wheel-XXXXXX)
trap 'rm -rf "$work"' EXIT

.venv/bin/python -m pip install -q build==1.3.0
rm -rf dist
.venv/bin/python -m build --outdir dist . > "$work/build.log" 2>&1 || { tail -20 "$work/build.log"; exit 1; }
wheel=$(ls dist/*.whl)
echo "built: $(ls dist | tr '\n' ' ')"
echo "wheel carries: $(python3 -m zipfile -l "$wheel" | awk '{print $1}' | grep -E 'weights/' | tr '\n' ' ')"

$PY -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q -c "$CONSTRAINTS" "$wheel" 2>&1 | grep -v '^WARNING: Location' || true
cd "$work"   # outside the source tree: only the installed wheel can be imported
"$work/venv/bin/nuker-mge" convert --sigma-b 6e4 --r-b 1.5 --alpha 1.5 --beta 1.8 --gamma 0.25 --qobs 0.6 \
    --distance 11.4 --backend nn -o "$work/mge_nn.txt" --inc 76 --mbh 1.3e8
"$work/venv/bin/python" - <<'PY'
import warnings
import numpy as np, nuker_mge_plugin as p
from nuker_mge_plugin import emulator, nuker_to_mge
assert "site-packages" in p.__file__, p.__file__
kw = dict(sigma_b=6e4, r_b=1.5, alpha=1.5, beta=1.8, gamma=0.25, qobs=0.6, distance=11.4)
exact, nn = nuker_to_mge(**kw), nuker_to_mge(**kw, backend="nn")
R = np.logspace(-1.5, 1.5, 50)
err = np.max(np.abs(nn.surface_density(R) / exact.surface_density(R) - 1))
ts = emulator.load(device="cpu")
fb = emulator.load(device="cpu", prefer="state_dict")
print(f"wheel smoke check OK: installed at {p.__file__}; nn vs exact profile max diff {err:.2e}; "
      f"loaded {type(ts).__name__} and fallback {type(fb).__name__}")
assert err < 0.05
PY
