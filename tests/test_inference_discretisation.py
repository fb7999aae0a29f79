"""The fit's sub-pixel check (inference/fit.py ``discretisation_shift``): its predicted MAP move
when the cube is sampled twice as finely, against the move itself."""

import tomllib
from pathlib import Path

import pytest
import torch

import nuker_mge_plugin
from nuker_mge_plugin.inference.config import config_from_dict
from nuker_mge_plugin.inference.fit import (MAX_DISCRETISATION_SHIFT_SIGMA, build_problem, discretisation_message,
                                            discretisation_shift, posterior_curvature)
from nuker_mge_plugin.inference.optimize import find_map

EXAMPLES = Path(nuker_mge_plugin.__file__).parent / "examples"


def _problem(mock_dir, tmp_path, nsub):
    """The quick fit's problem at ``nsub``, its MAP (L-BFGS from the truth) and Fisher covariance."""
    raw = tomllib.loads((EXAMPLES / "ngc4697_fit_quick.toml").read_text())
    raw["data"]["path"] = str(mock_dir / "obs.npz")
    raw["model"]["nsub"] = nsub
    raw["output"] = {"dir": str(tmp_path), "figures": False}
    prob = build_problem(config_from_dict(raw), progress=False)
    theta = torch.tensor([[prob.truth[n] for n in prob.space.free_names]], dtype=torch.float64)
    z = find_map(prob.log_prob, prob.space.unconstrain(theta), adam_steps=1, adam_lr=1e-6, lbfgs_steps=60,
                 progress=False)["z"]
    return prob, z, prob.fisher(z).covariance


@pytest.fixture(scope="module")
def nsub2(mock_dir, tmp_path_factory):
    return _problem(mock_dir, tmp_path_factory.mktemp("fit"), 2)


def test_refined_model_leaves_the_original_intact(nsub2):
    prob, z, _ = nsub2
    p = prob.params(z[None])
    with torch.no_grad():
        before = prob.model(p)
        fine = prob.model.refined(2)
        after = prob.model(p)
        m_fine, m_ref = fine(p), prob.model.refined(4)(p)
    assert prob.model.cube.nsub == 2 and fine.cube.nsub == 4
    assert fine.cube.nsub_centre == 2 * prob.model.cube.nsub_centre
    assert fine.cell_model is prob.model.cell_model
    assert torch.equal(before, after)
    # finer sampling converges: nsub 4 is closer to nsub 8 than nsub 2 is
    assert float((m_fine - m_ref).abs().sum()) < 0.5 * float((before - m_ref).abs().sum())
    with pytest.raises(ValueError, match="factor"):
        prob.model.refined(1)


def test_predicted_shift_matches_the_refitted_map(nsub2):
    prob, z, cov = nsub2
    check = discretisation_shift(prob, z, cov)
    assert check["curvature"] == "hessian" and (check["nsub"], check["nsub_check"]) == (2, 4)
    # the MAP of the same data with the finer cube: Newton iterations on its gradient
    H = posterior_curvature(prob, z, cov)
    C = torch.linalg.inv(-H)
    fine = prob.model.refined(2)
    z_fine = z.clone()
    for _ in range(10):
        with torch.enable_grad():
            zz = z_fine.clone().requires_grad_(True)
            lp = prob.likelihood(fine(prob.params(zz[None])))[0] + prob.space.log_prior_unconstrained(zz[None])[0]
            (g,) = torch.autograd.grad(lp, zz)
        z_fine = z_fine + C @ g
    assert float(g @ C @ g) < 1e-6  # converged
    sigma = torch.sqrt(torch.diagonal(C))
    measured = {n: float((z_fine - z)[i] / sigma[i]) for i, n in enumerate(prob.space.free_names)}
    assert abs(measured["inclination"]) > 0.3  # the quick mock's coarse cube does move its MAP
    for n, v in measured.items():
        assert check["shift_sigma"][n] == pytest.approx(v, abs=0.1), n


def test_coarse_cube_warns_and_names_the_nsub_to_use(mock_dir, tmp_path):
    prob, z, cov = _problem(mock_dir, tmp_path, 1)
    check = discretisation_shift(prob, z, cov)
    assert check["max_abs_shift_sigma"] > MAX_DISCRETISATION_SHIFT_SIGMA
    msg = discretisation_message(check)
    assert msg.startswith("warning:") and "model.nsub >= 2" in msg and check["worst"] in msg
    ok = dict(check, max_abs_shift_sigma=0.1)
    assert discretisation_message(ok).startswith("sub-pixel check: nsub 1 -> 2")
