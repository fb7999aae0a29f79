import numpy as np
import pytest

from nuker_mge_plugin.adapters.kinms_fitter import LABELS, TABLE1_MAX, TABLE1_MIN, nuker_vcirc, qobs_from_qintr

GUESS = [4.7, 1.5, 1.5, -1.5, 0.25, 0.6, 8.1]


def test_protocol_attributes():
    prof = nuker_vcirc(11.4, GUESS)
    assert prof.freeparams == len(LABELS) == 7
    assert prof.operation == "quad"
    assert prof.min.tolist() == TABLE1_MIN and prof.max.tolist() == TABLE1_MAX
    assert prof.fixed.shape == prof.precisions.shape == (7,)


def test_works_inside_kinms_fitter_eval():
    velocity_profs = pytest.importorskip("kinms_fitter.velocity_profs").velocity_profs
    prof = nuker_vcirc(11.4, GUESS)
    r = np.linspace(0.05, 5, 30)
    v = velocity_profs.eval([prof], r, np.array(GUESS), inc=76.0)
    assert v.shape == r.shape and np.all(np.isfinite(v)) and np.all(v > 0)
    # equals the MGE route by hand
    mge = prof.mge(GUESS, 76.0)
    assert np.allclose(v, mge.vcirc(r, 76.0, 10**8.1))
    assert np.allclose(mge.qobs, qobs_from_qintr(0.6, 76.0))


def test_any_inclination_deprojects_with_qintr():
    prof = nuker_vcirc(11.4, GUESS)
    for inc in (72.0, 80.0, 89.0):
        assert np.all(np.isfinite(prof(np.array([0.5, 2.0]), [4.7, 1.5, 1.5, -1.5, 0.25, 0.1, 8.0], inc=inc)))


def test_bad_construction():
    with pytest.raises(ValueError, match="7 values"):
        nuker_vcirc(11.4, GUESS[:3])
    with pytest.raises(ValueError, match="gamma_minus_beta"):
        nuker_vcirc(11.4, GUESS, maximums=TABLE1_MAX[:3] + [0.5] + TABLE1_MAX[4:])


def test_zero_at_the_centre_where_kinms_fitter_samples_first():
    """kinms_fitter's radius grid starts at 0; jampy's v_c is NaN there, nuker_vcirc gives 0 (docs/kinms_fitter.rst)."""
    v = nuker_vcirc(11.4, GUESS)(np.array([0.0, 0.05, 1.0]), GUESS, inc=np.array([76.0]))
    assert v[0] == 0.0 and np.all(np.isfinite(v)) and np.all(v[1:] > 0)
