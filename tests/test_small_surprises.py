"""Small surprises a new user met: numpy scalars as parameters, a readable MGE repr, signed amplitudes."""

import numpy as np
import pytest

from nuker_mge_plugin import nuker_to_mge

SHAPE = dict(r_b=1.5, alpha=1.5, beta=1.8, gamma=0.25, qobs=0.6, distance=11.4)


@pytest.fixture(scope="module")
def mge():
    return nuker_to_mge(sigma_b=6e4, **SHAPE)


@pytest.mark.parametrize("value", [np.array(6e4), np.float32(6e4), np.float64(6e4), np.int64(60000),
                                   np.array([6e4])[0], np.array(60000)])
def test_numpy_scalars_and_0d_arrays_accepted(mge, value):
    other = nuker_to_mge(sigma_b=value, **SHAPE)
    np.testing.assert_allclose(other.surf_pc, mge.surf_pc, rtol=1e-7)
    assert type(other.meta["sigma_b"]) is float


def test_all_parameters_accept_0d_arrays(mge):
    other = nuker_to_mge(sigma_b=np.array(6e4), **{k: np.array(v) for k, v in SHAPE.items()})
    np.testing.assert_array_equal(other.table, mge.table)


@pytest.mark.parametrize("value,error", [(np.array([6e4, 7e4]), TypeError), (np.array(np.nan), ValueError),
                                         (np.array(True), TypeError), (np.array("6e4"), TypeError)])
def test_non_scalars_still_refused(value, error):
    with pytest.raises(error, match="sigma_b"):
        nuker_to_mge(sigma_b=value, **SHAPE)


def test_repr_is_a_short_summary(mge):
    text = repr(mge)
    assert len(text) < 300 and "\n" not in text and "array(" not in text, text
    assert text.startswith("MGE(64 Gaussians, sigma 0.01809-180.9 arcsec, qobs=0.6, distance=11.4 Mpc")
    n_neg = int((mge.surf_pc < 0).sum())
    assert n_neg > 0 and f"{n_neg} negative amplitudes" in text
    assert "exact backend" in text and "alpha=1.5" in text and str(mge) == text


def test_negative_amplitudes_are_fine_for_jampy(mge):
    """Signed amplitudes, positive profile, and jampy's v_c (the docs' claim, docs/design.rst)."""
    assert (mge.surf_pc < 0).any()
    R = np.logspace(np.log10(3 / mge.pc_per_arcsec), np.log10(3000 / mge.pc_per_arcsec), 200)
    assert np.all(mge.surface_density(R) > 0)
    v = mge.vcirc(np.logspace(-2, 1, 20), 76.0, 0.0)
    assert np.all(np.isfinite(v)) and np.all(v > 0)


_VCIRC_SCRIPT = """
import warnings
import numpy as np
from nuker_mge_plugin import nuker_to_mge
from nuker_mge_plugin.dynamics import vcirc
m = nuker_to_mge(sigma_b=6e4, r_b=1.5, alpha=1.5, beta=1.8, gamma=0.25, qobs=0.6, distance=11.4)
warnings.simplefilter("error")
v = vcirc(m.surf_pc, m.sigma_arcsec, m.qobs, 76.0, 1.3e8, 11.4, np.array([0.1, 1.0, 5.0]))
assert not m.surf_pc.flags.writeable
print(np.allclose(np.asarray(v), m.vcirc([0.1, 1.0, 5.0], 76.0, 1.3e8), rtol=1e-4))
"""


def test_vcirc_on_mge_arrays_emits_no_torch_warning():
    """``dynamics.vcirc`` on an MGE's read-only arrays must not print PyTorch's non-writable warning.

    In a fresh process: torch prints that warning only once per process, so an earlier test
    would hide it.
    """
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _VCIRC_SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr[-2000:]
