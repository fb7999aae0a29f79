import math

import numpy as np
import pytest
import torch

from nuker_mge_plugin.nuker import (ALPHA_RANGE, R_B_PC_RANGE, check_nuker_params, check_training_box, log_nuker,
                                    nuker_surface_density)


def closed_form(R, sb, rb, a, b, g):
    return sb * 2 ** ((b - g) / a) * (R / rb) ** (-g) * (1 + (R / rb) ** a) ** ((g - b) / a)


@pytest.mark.parametrize("R,sb,rb,a,b,g", [
    (1.0, 1.0, 1.0, 1.0, 2.0, 0.5),       # at the break: Sigma = Sigma_b exactly
    (0.3, 250.0, 10.0, 2.0, 1.8, 0.2),
    (50.0, 1e4, 100.0, 0.5, 3.0, 1.0),
    (3.0, 7.0, 2.0, 10.0, 4.2, 1.2),
])
def test_matches_closed_form(R, sb, rb, a, b, g):
    assert nuker_surface_density(R, sb, rb, a, b, g) == pytest.approx(closed_form(R, sb, rb, a, b, g), rel=1e-13)


def test_value_at_break_is_sigma_b():
    for a, b, g in [(0.1, 3.0, 0.001), (10.0, 4.2, 1.2), (1.3, 2.2, 0.7)]:
        assert nuker_surface_density(17.0, 42.0, 17.0, a, b, g) == pytest.approx(42.0, rel=1e-13)


def test_hand_checked_asymptotes():
    # Far inside the break Sigma -> Sigma_b 2^((b-g)/a) (R/rb)^-g; far outside -> ... (R/rb)^-b.
    sb, rb, a, b, g = 3.0, 10.0, 2.0, 2.5, 0.5
    R_in, R_out = 1e-4, 1e5
    norm = sb * 2 ** ((b - g) / a)
    assert nuker_surface_density(R_in, sb, rb, a, b, g) == pytest.approx(norm * (R_in / rb) ** -g, rel=1e-8)
    assert nuker_surface_density(R_out, sb, rb, a, b, g) == pytest.approx(norm * (R_out / rb) ** -b, rel=1e-7)


def test_no_overflow_over_box_and_radii():
    R = np.logspace(-1, 5, 200)  # 0.1 pc - 100 kpc
    corners = [(a, g + bg, g, rb) for a in ALPHA_RANGE for g in (0.001, 1.2) for bg in (0.3, 3.0)
               for rb in R_B_PC_RANGE]
    for a, b, g, rb in corners:
        ln = log_nuker(R, 1.0, rb, a, b, g)
        assert np.all(np.isfinite(ln))
        # float32 torch path stays finite too (log space).
        lt = log_nuker(torch.tensor(R, dtype=torch.float32), 1.0, rb, a, b, g)
        assert torch.all(torch.isfinite(lt))
        assert np.allclose(lt.numpy(), ln, rtol=1e-5, atol=1e-3)


def test_torch_matches_numpy_and_is_differentiable():
    R = torch.logspace(0, 3, 7, dtype=torch.float64)
    p = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (5.0, 30.0, 1.7, 2.4, 0.6)]
    out = nuker_surface_density(R, *p)
    ref = nuker_surface_density(R.numpy(), *(float(x) for x in p))
    assert np.allclose(out.detach().numpy(), ref, rtol=1e-14)
    assert torch.autograd.gradcheck(lambda *q: log_nuker(R, *q), p)


def test_linear_in_sigma_b():
    R = np.logspace(0, 3, 11)
    s1 = nuker_surface_density(R, 1.0, 20.0, 2.0, 2.0, 0.5)
    assert np.allclose(nuker_surface_density(R, 1234.5, 20.0, 2.0, 2.0, 0.5), 1234.5 * s1, rtol=1e-13)


@pytest.mark.parametrize("kw,name", [
    (dict(sigma_b=0.0), "sigma_b"), (dict(sigma_b=-1.0), "sigma_b"), (dict(r_b=0.0), "r_b"),
    (dict(alpha=0.0), "alpha"), (dict(gamma=-0.1), "gamma"), (dict(beta=0.4), "beta"),
    (dict(gamma=2.0, beta=3.0), r"gamma.*\[0, 2\)"), (dict(gamma=2.5, beta=3.0), "diverges"),
    (dict(qobs=0.0), "qobs"), (dict(qobs=1.2), "qobs"), (dict(alpha=math.nan), "alpha"), (dict(r_b=math.inf), "r_b"),
])
def test_bad_params_named(kw, name):
    params = dict(sigma_b=1.0, r_b=1.0, alpha=1.0, beta=2.0, gamma=0.5, qobs=0.8)
    params.update(kw)
    with pytest.raises(ValueError, match=name):
        check_nuker_params(**params)


def test_training_box():
    check_training_box(1.0, 2.0, 0.5, 100.0)
    with pytest.raises(ValueError, match=r"alpha.*\[0.1, 10\]"):
        check_training_box(20.0, 2.0, 0.5, 100.0)
    with pytest.raises(ValueError, match=r"beta - gamma"):
        check_training_box(1.0, 0.6, 0.5, 100.0)
    with pytest.raises(ValueError, match=r"r_b \[pc\]"):
        check_training_box(1.0, 2.0, 0.5, 1.0)
