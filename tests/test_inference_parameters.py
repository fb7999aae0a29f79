"""Table-1 parameter space: bijection, Jacobian, priors, validation, bound pile-up report."""

import math

import numpy as np
import pytest
import torch

from nuker_mge_plugin.inference.parameters import (PARAMETER_NAMES, TABLE1, ParameterSpace,
                                                   piled_up_at_bounds)


def test_defaults_are_table1():
    sp = ParameterSpace()
    assert sp.names == PARAMETER_NAMES and len(PARAMETER_NAMES) == 15
    assert sp.free_names == PARAMETER_NAMES and sp.n_free == 15 and sp.fixed == {}
    assert sp.bounds["log10_mbh"] == (6.0, 9.79934)
    assert sp.bounds["gamma_minus_beta"] == (-3.0, -0.3)
    assert sp.bounds == TABLE1


def test_round_trip_and_jacobian_vs_autograd():
    sp = ParameterSpace({"gamma": 0.5, "x": 0.0})
    assert sp.n_free == 13 and "gamma" not in sp.free_names
    g = torch.Generator().manual_seed(1)
    z = 3.0 * torch.randn(32, sp.n_free, generator=g, dtype=torch.float64)
    theta = sp.constrain(z)
    lo, hi = sp.low, sp.high
    assert bool(((theta > lo) & (theta < hi)).all())
    assert torch.allclose(sp.unconstrain(theta), z, atol=1e-9, rtol=0)
    # log|det J| against the autograd Jacobian of one row at a time
    jac = torch.func.vmap(torch.func.jacrev(lambda r: sp.constrain(r[None])[0]))(z)
    ref = torch.linalg.slogdet(jac)[1]
    assert torch.allclose(sp.log_abs_det_jacobian(z), ref, atol=1e-10, rtol=0)
    th2, ld = sp.constrain_with_logdet(z)
    assert torch.equal(th2, theta) and ld.shape == (32,)
    # log prior in z = uniform log prior + log|J|
    assert torch.allclose(sp.log_prior_unconstrained(z), sp.log_prior(theta) + ref, atol=1e-10, rtol=0)
    # extreme z stay finite
    big = torch.full((2, sp.n_free), 800.0, dtype=torch.float64) * torch.tensor([[1.0], [-1.0]],
                                                                                  dtype=torch.float64)
    assert bool(torch.isfinite(sp.log_abs_det_jacobian(big)).all())
    assert bool(torch.isfinite(sp.log_prior_unconstrained(big)).all())


def test_prior_precision_is_logistic_curvature():
    sp = ParameterSpace({n: 1.0 for n in ("alpha", "qintr")})
    z = torch.linspace(-6, 6, 7, dtype=torch.float64)[:, None].expand(7, sp.n_free).clone()
    h = torch.func.vmap(torch.func.hessian(lambda r: sp.log_prior_unconstrained(r[None])[0]))(z)
    assert torch.allclose(-torch.diagonal(h, dim1=-2, dim2=-1), sp.prior_precision_unconstrained(z), atol=1e-12)


def test_to_dict_broadcasts_fixed_and_keeps_gradients():
    sp = ParameterSpace({"inclination": 80.0, "pa": (100.0, 200.0)})
    z = torch.zeros(4, sp.n_free, dtype=torch.float64, requires_grad=True)
    d = sp.to_dict(sp.constrain(z))
    assert list(d) == list(PARAMETER_NAMES)
    assert all(v.shape == (4,) for v in d.values())
    assert torch.equal(d["inclination"], torch.full((4,), 80.0, dtype=torch.float64))
    assert torch.allclose(d["pa"], torch.full((4,), 150.0, dtype=torch.float64))
    d["pa"].sum().backward()
    assert z.grad[:, sp.index("pa")].abs().sum() > 0
    th = sp.from_dict({k: v.detach() for k, v in d.items()})
    assert th.shape == (4, sp.n_free)
    with pytest.raises(ValueError, match="inclination is fixed"):
        sp.index("inclination")


def test_log_prior_inside_outside():
    sp = ParameterSpace({n: TABLE1[n][0] + 0.5 * (TABLE1[n][1] - TABLE1[n][0])
                         for n in PARAMETER_NAMES if n not in ("alpha", "flux")})
    assert sp.free_names == ("alpha", "flux")
    theta = torch.tensor([[1.0, 10.0], [0.1, 50.0], [0.05, 10.0], [1.0, float("nan")]], dtype=torch.float64)
    lp = sp.log_prior(theta)
    const = -(math.log(10.0 - 0.1) + math.log(50.0 - 1.0))
    assert lp[0] == pytest.approx(const) and lp[1] == pytest.approx(const)
    assert lp[2] == -math.inf and lp[3] == -math.inf


def test_prior_draws_seeded_and_inside():
    sp = ParameterSpace()
    a = sp.sample_prior(500, 7)
    b = sp.sample_prior(500, 7)
    assert torch.equal(a, b) and a.dtype == torch.float64 and a.shape == (500, 15)
    assert bool(((a > sp.low) & (a < sp.high)).all())
    g = torch.Generator().manual_seed(7)
    c1, c2 = sp.sample_prior(10, g), sp.sample_prior(10, g)
    assert not torch.equal(c1, c2)           # one stream, not re-seeded per call
    z = sp.sample_prior(10, 3, unconstrained=True)
    assert torch.allclose(sp.constrain(z), sp.sample_prior(10, 3))
    # uniform: each column's mean near the range centre
    m = ((a - sp.low) / (sp.high - sp.low)).mean(0)
    assert bool(((m - 0.5).abs() < 0.08).all())


def test_data_ranges():
    sp = ParameterSpace({"x": (-0.2, 0.3)}, data_ranges={"systemic_velocity": (2900.0, 2960.0), "x": (-2, 2)})
    assert sp.bounds["systemic_velocity"] == (2900.0, 2960.0)
    assert sp.bounds["x"] == (-0.2, 0.3)        # spec wins over data-derived defaults
    assert sp.bounds["y"] == (-1.0, 1.0)
    with pytest.raises(ValueError, match="gamma"):
        ParameterSpace(data_ranges={"gamma": (0.1, 0.5)})
    with pytest.raises(ValueError, match="y"):
        ParameterSpace(data_ranges={"y": 0.0})


@pytest.mark.parametrize("spec, match", [
    ({"mbh": (6, 9)}, "unknown parameter 'mbh'"),
    ({"alpha": (2.0, 1.0)}, "alpha: prior range needs low < high"),
    ({"alpha": (1.0, 1.0)}, "alpha: prior range needs low < high"),
    ({"gamma_minus_beta": 0.1}, "gamma_minus_beta: fixed value 0.1"),
    ({"qintr": 1.5}, r"qintr: fixed value 1.5 .* \(0, 1\]"),
    ({"qintr": 0.0}, "qintr"),
    ({"inclination": 95.0}, r"inclination: .*\(0, 90\)"),
    ({"scale_length": 0.0}, "scale_length: fixed value 0"),
    ({"break_r": -1.0}, "break_r"),
    ({"inclination": (72.0, 95.0)}, "inclination: prior range"),
    ({"gamma": (0.1, 0.2, 0.3)}, "gamma: a prior range needs exactly 2"),
    ({"flux": (1.0, float("inf"))}, "flux: prior range .* must be finite"),
    ({"log10_mbh": float("nan")}, "log10_mbh"),
])
def test_config_errors_name_the_parameter(spec, match):
    with pytest.raises(ValueError, match=match) as ei:
        ParameterSpace(spec)
    assert "\n" not in str(ei.value)


def test_type_errors():
    with pytest.raises(TypeError, match="alpha"):
        ParameterSpace({"alpha": "wide"})
    with pytest.raises(TypeError, match="alpha"):
        ParameterSpace({"alpha": True})
    sp = ParameterSpace({"alpha": {"low": 0.5, "high": 2.0}, "gamma": {"fixed": 0.3}})
    assert sp.bounds["alpha"] == (0.5, 2.0) and sp.fixed["gamma"] == 0.3


def test_unconstrain_rejects_values_on_or_outside_bounds():
    sp = ParameterSpace()
    theta = sp.sample_prior(3, 0)
    theta[1, sp.index("qintr")] = 1.0          # on the upper bound: z would be +inf
    with pytest.raises(ValueError, match="qintr = 1 .* strictly inside"):
        sp.unconstrain(theta)
    with pytest.raises(ValueError, match=r"shape \(B, 15\)"):
        sp.constrain(torch.zeros(3, 14, dtype=torch.float64))


def test_piled_up_at_bounds():
    sp = ParameterSpace({n: 1.0 for n in ("qintr", "alpha")} | {"gamma": 0.5})
    rng = np.random.default_rng(0)
    th = sp.sample_prior(4000, 11).numpy()
    assert sp.piled_up_at_bounds(th) == []          # flat posterior: ~1% at each bound
    j = sp.index("log10_mbh")
    lo, hi = sp.bounds["log10_mbh"]
    th[:1200, j] = lo + 0.004 * (hi - lo) * rng.random(1200)   # 30% in the lowest 1%
    rep = sp.piled_up_at_bounds(th.reshape(4, 1000, -1))
    assert len(rep) == 1 and rep[0].name == "log10_mbh" and rep[0].side == "low"
    assert rep[0].bound == lo and rep[0].fraction == pytest.approx(0.3, abs=0.01)
    # the same from a mapping of named arrays (e.g. an ArviZ posterior)
    rep2 = piled_up_at_bounds({"log10_mbh": th[:, j]}, {"log10_mbh": (lo, hi)}, min_fraction=0.25)
    assert rep2 == rep
    with pytest.raises(ValueError, match="min_fraction"):
        piled_up_at_bounds({}, {}, min_fraction=0)


def test_log_posterior_unconstrained_and_precision_at_ends():
    sp = ParameterSpace({"pa": (0.0, 359.9)} | {n: TABLE1[n][0] + 0.5 * (TABLE1[n][1] - TABLE1[n][0])
                                                 for n in PARAMETER_NAMES if n not in ("pa", "flux")})
    z = torch.tensor([[-30.0, 30.0], [0.0, 0.0], [30.0, -30.0]], dtype=torch.float64)
    th = sp.constrain(z)
    # a bound at 0 is resolved to full relative precision (pa = 359.9 e^-30 deg), and back
    assert th[0, 0].item() == pytest.approx(359.9 * math.exp(-30) / (1 + math.exp(-30)), rel=1e-13)
    assert sp.unconstrain(th[:1])[0, 0].item() == pytest.approx(-30.0, rel=1e-13)
    assert th[2, 1].item() == pytest.approx(1.0 + 49.0 * math.exp(-30), rel=1e-15)
    assert float(th.max()) <= 359.9 and bool((th[:, 1] <= 50.0).all())

    def loglike(p):
        assert set(p) == set(PARAMETER_NAMES)
        return -0.5 * ((p["pa"] - 100.0) / 10.0) ** 2 - 0.0 * p["flux"]

    f = sp.log_posterior_unconstrained(loglike)
    zz = torch.zeros(4, 2, dtype=torch.float64)
    assert torch.allclose(f(zz), loglike(sp.to_dict(sp.constrain(zz))) + sp.log_prior_unconstrained(zz))
