"""docs/metrics.rst M6 for the foundation entry points: bad inputs give a clear error, never NaN/Inf."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nuker_mge_plugin import nuker_to_mge
from nuker_mge_plugin.nuker import nuker_surface_density

anything = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10),
                     st.floats(-1e6, 1e6), st.sampled_from([0.0, -0.0, 1e-300, 1e300]))
plausible = dict(sigma_b=st.floats(1e-3, 1e7), r_b=st.floats(0.01, 20.0), alpha=st.floats(0.05, 20.0),
                 beta=st.floats(0.0, 6.0), gamma=st.floats(0.0, 3.0), qobs=st.floats(0.05, 1.0),
                 distance=st.floats(0.5, 200.0))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**{k: st.one_of(v, anything) for k, v in plausible.items()})
def test_nuker_to_mge_finite_or_clear_error(sigma_b, r_b, alpha, beta, gamma, qobs, distance):
    try:
        mge = nuker_to_mge(sigma_b=sigma_b, r_b=r_b, alpha=alpha, beta=beta, gamma=gamma, qobs=qobs,
                           distance=distance)
    except (ValueError, TypeError) as err:
        msg = str(err)
        assert any(name in msg for name in ("sigma_b", "r_b", "alpha", "beta", "gamma", "qobs", "distance")), msg
        return
    assert 0 <= gamma < 2 and beta > gamma   # only physical Nukers get through
    assert np.all(np.isfinite(mge.surf_pc)) and np.all(np.isfinite(mge.sigma_arcsec))
    R = np.array([0.01, 0.1, 1.0, 10.0]) * r_b
    assert np.all(np.isfinite(mge.surface_density(R)))
    assert math.isfinite(mge.projected_mass(math.inf))


@settings(max_examples=200, deadline=None)
@given(R=st.floats(1e-1, 1e5), rb=st.floats(2.0, 2000.0), a=st.floats(0.1, 10.0), g=st.floats(0.001, 1.2),
       bg=st.floats(0.3, 3.0))
def test_profile_finite_and_positive_over_box(R, rb, a, g, bg):
    s = nuker_surface_density(R, 1.0, rb, a, g + bg, g)
    assert np.isfinite(s) and s > 0


@pytest.mark.parametrize("value", [np.array([1.0, 2.0]), [1.0], None, "1", True])
def test_non_scalar_parameters_refused(value):
    with pytest.raises(TypeError, match="alpha"):
        nuker_to_mge(sigma_b=1e4, r_b=1.0, alpha=value, beta=2.0, gamma=0.5, qobs=0.8, distance=10.0)
