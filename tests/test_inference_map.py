"""The MAP search: the coordinate screen of the starts, then Adam and L-BFGS (inference/optimize.py)."""

import math

import pytest
import torch

from nuker_mge_plugin.inference.fit import map_starts
from nuker_mge_plugin.inference.optimize import SCREEN_ORDER, find_map, screen_starts
from nuker_mge_plugin.inference.parameters import PARAMETER_NAMES, TABLE1, ParameterSpace

# Three free parameters; the others fixed at an interior value.
FREE = {"pa": (0.0, 359.9), "log10_mbh": (6.0, 9.79934), "systemic_velocity": (1000.0, 1500.0)}
TRUE = {"pa": 246.0, "log10_mbh": 8.11, "systemic_velocity": 1246.0}


def _space():
    spec = {n: FREE[n] if n in FREE else 0.5 * (TABLE1[n][0] + TABLE1[n][1]) for n in PARAMETER_NAMES}
    return ParameterSpace(spec)


def _multimodal_log_prob(space):
    """A separable posterior per parameter: a broad, lower mode, and a higher peak of compact
    support (half-width 0.05 of the range) that no gradient reaches from outside it."""
    def log_prob(z):
        theta = space.constrain(z)
        lp = torch.zeros(z.shape[0], dtype=z.dtype)
        for k, n in enumerate(space.free_names):
            lo, hi = FREE[n]
            u = (theta[:, k] - lo) / (hi - lo)
            u_true = (TRUE[n] - lo) / (hi - lo)
            lp = lp + 50.0 * torch.relu(1.0 - (u - u_true).abs() / 0.05) ** 2 \
                + 20.0 * torch.exp(-0.5 * ((u - 0.3) / 0.15) ** 2)
        return lp
    return log_prob


def test_screen_finds_the_narrow_global_mode_that_gradient_ascent_misses():
    space = _space()
    lp_fn = _multimodal_log_prob(space)
    theta0 = map_starts(space, 3, torch.Generator().manual_seed(1))
    peak = float(lp_fn(space.unconstrain(torch.tensor([[TRUE[n] for n in space.free_names]],
                                                          dtype=torch.float64))))
    # gradient steps alone from these starts miss at least one compact peak (each is worth 50)
    plain = find_map(lp_fn, space.unconstrain(theta0), adam_steps=200, adam_lr=0.05, lbfgs_steps=20,
                     progress=False)
    assert plain["log_prob"] < peak - 40.0
    theta, lp, n_evals = screen_starts(lp_fn, space, theta0, n_grid=24, sweeps=3, progress=False)
    assert n_evals == 3 + 3 * 3 * 3 * 24
    assert float(lp.max()) > 150.0  # all three compact peaks found
    best = theta[int(torch.argmax(lp))]
    for k, n in enumerate(space.free_names):
        lo, hi = FREE[n]
        assert abs(float(best[k]) - TRUE[n]) < 0.03 * (hi - lo), n
    res = find_map(lp_fn, space.unconstrain(theta), adam_steps=100, adam_lr=0.02, lbfgs_steps=20, progress=False)
    assert res["log_prob"] >= peak - 0.05


def test_screen_never_lowers_a_start_and_keeps_inside_the_box():
    space = _space()
    lp_fn = _multimodal_log_prob(space)
    theta0 = map_starts(space, 5, torch.Generator().manual_seed(2))
    lp0 = lp_fn(space.unconstrain(theta0)).double()
    theta, lp, _ = screen_starts(lp_fn, space, theta0, n_grid=4, sweeps=1, progress=False)
    assert torch.all(lp >= lp0 - 1e-9)
    assert torch.all((theta > space.low) & (theta < space.high))
    assert torch.allclose(lp, lp_fn(space.unconstrain(theta)).double())


def test_screen_skips_non_finite_points():
    space = _space()
    lp_fn = _multimodal_log_prob(space)

    def holes(z):  # NaN on half of the velocity range
        lp = lp_fn(z)
        v = space.constrain(z)[:, space.index("systemic_velocity")]
        return torch.where(v > 1250.0, torch.full_like(lp, math.nan), lp)

    theta, lp, _ = screen_starts(holes, space, map_starts(space, 2, torch.Generator().manual_seed(3)),
                                 progress=False)
    assert torch.all(torch.isfinite(lp))
    assert torch.all(theta[:, space.index("systemic_velocity")] <= 1250.0)


def test_map_starts_are_the_midpoint_then_prior_draws():
    space = _space()
    th = map_starts(space, 4, torch.Generator().manual_seed(0))
    assert th.shape == (4, 3)
    assert torch.allclose(th[0], (space.low + space.high) / 2)
    assert torch.all((th > space.low) & (th < space.high))
    assert map_starts(space, 1, torch.Generator()).shape == (1, 3)


def test_screen_order_names_are_table1_names():
    assert set(SCREEN_ORDER) == set(PARAMETER_NAMES)


@pytest.mark.parametrize("kw", [dict(n_grid=1), dict(sweeps=0)])
def test_screen_refuses_a_degenerate_grid(kw):
    space = _space()
    with pytest.raises(ValueError, match="n_grid >= 2 and sweeps >= 1"):
        screen_starts(lambda z: z.sum(-1), space, map_starts(space, 1, None), progress=False, **kw)


def test_subpixel_warning_near_edge_on():
    from types import SimpleNamespace

    from nuker_mge_plugin.inference.fit import subpixel_warning

    cfg = SimpleNamespace(model=SimpleNamespace(cell_arcsec=0.1, nsub=2))
    assert subpixel_warning(cfg, dict(inclination=76.0, scale_length=0.8)) is None  # the demo: 0.26 scale lengths
    msg = subpixel_warning(cfg, dict(inclination=84.0, scale_length=0.8))         # M5 "edge": 0.60
    assert msg is not None and "model.nsub >= 4" in msg and "(now 2)" in msg
    cfg4 = SimpleNamespace(model=SimpleNamespace(cell_arcsec=0.1, nsub=4))
    assert subpixel_warning(cfg4, dict(inclination=84.0, scale_length=0.8)) is None
