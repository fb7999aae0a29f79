"""The fit's sampler dispatch (``[sampler] kind``) and its verdict: one line saying whether the
chains converged (R-hat <= 1.01, bulk and tail ESS >= 400), a ``warning:`` line when they did not
or when NUTS diverged, the same lines in ``summary["warnings"]``, and ``summary["sampler"]``.

The dispatch tests replace the sampler by a stand-in that returns chosen draws (the quick fit's
MAP and Fisher matrix are real), so that they check this wiring without depending on how fast or
well a sampler mixes; the last test runs the real NUTS once sampling/nuts.py provides it.
"""

import json
import sys
import tomllib
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import nuker_mge_plugin
from nuker_mge_plugin.inference import fit
from nuker_mge_plugin.inference.config import SAMPLER_KIND_KEYS, config_from_dict
from nuker_mge_plugin.sampling.diagnostics import convergence

EXAMPLES = Path(nuker_mge_plugin.__file__).parent / "examples"


# ----------------------------------------------------------------------------- the verdict lines
def _report(shift=0.0, n=1000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, n))
    x[0] += shift
    return convergence({"log10_mbh": x, "pa": rng.standard_normal((4, n))})


def _sampler(kind="nuts", **kw):
    raw = {"data": {"path": "obs.npz"}, "galaxy": {"distance_mpc": 16.5},
           "model": {"cell_arcsec": 0.15, "n_pix": 16}, "sampler": {"kind": kind, **kw}}
    return config_from_dict(raw, check_files=False).sampler


def test_converged_run_says_so_by_which_criteria():
    info, warnings = fit.sampler_messages(_report(), _sampler(), n_draws=1000, stopped="converged",
                                          divergences_per_chain=[0, 0, 0, 0])
    assert warnings == []
    assert info.startswith("converged: r_hat <= 1.01 and ess_bulk, ess_tail >= 400 for every parameter")
    assert "max R-hat 1.00" in info and "1000 draws per chain" in info


@pytest.mark.parametrize("stopped,needle", [
    ("max_draws", "Sampling stopped at sampler.max_draws = 10000 draws per chain."),
    ("max_wall_s", "Sampling stopped at sampler.max_wall_s = 60 s after 1000 draws per chain."),
    ("draws", "Sampling stopped after sampler.draws = 1000 per chain (sampler.until_converged = false)."),
])
def test_unconverged_run_is_one_warning_line(stopped, needle):
    s = _sampler(max_wall_s=60, until_converged=stopped != "draws")
    info, warnings = fit.sampler_messages(_report(shift=1.0), s, n_draws=1000, stopped=stopped)
    assert info is None and len(warnings) == 1
    w = warnings[0]
    assert w.startswith("warning: the chains have NOT converged") and "\n" not in w
    assert "log10_mbh (R-hat" in w and "Do not quote these intervals" in w and w.endswith(needle), w


def test_divergences_are_a_warning_with_counts_per_chain():
    info, warnings = fit.sampler_messages(_report(), _sampler(), n_draws=1000, stopped="converged",
                                          divergences_per_chain=[3, 0, 1, 0])
    assert info.startswith("converged:") and len(warnings) == 1
    assert warnings[0].startswith("warning: 4 divergent NUTS transitions after warm-up (per chain: 3, 0, 1, 0)")
    assert "sampler.target_acceptance closer to 1 (now 0.8)" in warnings[0]


def test_mala_verdict_mentions_no_nuts_settings():
    _, warnings = fit.sampler_messages(_report(shift=1.0), _sampler("mala"), n_draws=2000)
    assert len(warnings) == 1 and "Sampling stopped after 2000 draws per chain (kind = \"mala\"" in warnings[0]
    assert warnings[0].endswith('use kind = "nuts", which draws until converged).')


def test_schedule_alias_and_settings():
    s = _sampler("mala", draws=30, burn_in_stages=2, burn_in_steps=7, n_step_trials=3, thin=2)
    sch = fit.mala_schedule(s)
    assert fit._schedule is fit.mala_schedule
    assert tuple(sch.burn_in) == (7, 7) and len(sch.step_sizes) == 3 and sch.n_draws == 30 and sch.thin == 2
    assert sch.target_accept == 0.574


# ----------------------------------------------------------------------------- the fit with a stand-in sampler
class FakeResult:
    """What write_fit_results reads of a sampler result, with draws around the chains' starts."""

    def __init__(self, z_start, transform, names, *, n=1000, offset=0.0, kind="nuts", stopped="draws",
                 divergences=None, seed=0):
        g = torch.Generator().manual_seed(seed)
        C, d = z_start.shape
        z = z_start[:, None, :] * 0 + z_start.mean(0) + 0.01 * torch.randn((C, n, d), generator=g,
                                                                             dtype=z_start.dtype)
        z[0] += offset * 0.01
        theta = transform(z.reshape(C * n, d)).reshape(C, n, d)
        self._draws = {k: theta[..., i].numpy() for i, k in enumerate(names)}
        self._shape = (C, n)
        self.kind = kind
        self.n_grad_evals, self.n_nonfinite_total, self.step_size, self.wall_time = 1234, 0, 0.25, 1.5
        if kind == "nuts":
            self.stopped = stopped
            self.divergences_per_chain = list(divergences or [0] * C)
            self.n_divergent = sum(self.divergences_per_chain)

    def draws(self):
        return dict(self._draws)

    def sample_stats(self):
        C, n = self._shape
        ss = dict(logp=np.zeros((C, n)), step_size=np.full(C, self.step_size))
        if self.kind == "nuts":
            ss.update(acceptance_rate=np.full((C, n), 0.85), diverging=np.zeros((C, n), bool),
                      tree_depth=np.full((C, n), 3), n_leapfrog=np.full((C, n), 7), energy=np.zeros((C, n)))
        else:
            ss["accepted"] = np.ones((C, n), bool)
        return ss

    def traces(self):
        return {}


def _quick_config(mock_dir, out, kind, **sampler):
    raw = tomllib.loads((EXAMPLES / "ngc4697_fit_quick.toml").read_text())
    raw["data"]["path"] = str(mock_dir / "obs.npz")
    raw["output"] = {"dir": str(out), "figures": False}
    s = {k: v for k, v in raw["sampler"].items() if k not in SAMPLER_KIND_KEYS["mala"] + SAMPLER_KIND_KEYS["nuts"]}
    s.update(kind=kind, **sampler)
    raw["sampler"] = s
    return config_from_dict(raw)


@pytest.fixture
def fake_nuts(monkeypatch):
    """sampling.nuts replaced by a module whose run_nuts records its arguments and returns a FakeResult."""
    calls = {}

    class NUTSSettings:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    def run_nuts(logp_and_grad, z_start, *, settings, mass_matrix, transform, names, seed, checkpoint_dir, resume,
                 checkpoint_every, progress, bounds=None):
        calls.update(settings=settings, mass_matrix=mass_matrix, names=names, seed=seed, z_start=z_start,
                     checkpoint_dir=checkpoint_dir, resume=resume, checkpoint_every=checkpoint_every)
        lp, grad = logp_and_grad(z_start)
        assert lp.shape == (z_start.shape[0],) and grad.shape == z_start.shape
        return FakeResult(z_start, transform, names, **calls.get("result", {}))

    mod = types.ModuleType("nuker_mge_plugin.sampling.nuts")
    mod.NUTSSettings, mod.run_nuts = NUTSSettings, run_nuts
    monkeypatch.setitem(sys.modules, "nuker_mge_plugin.sampling.nuts", mod)
    return calls


def test_nuts_dispatch_unconverged_with_divergences(mock_dir, tmp_path, fake_nuts):
    fake_nuts["result"] = dict(offset=3.0, stopped="max_draws", divergences=[3, 0], n=400)
    cfg = _quick_config(mock_dir, tmp_path / "fit", "nuts", warmup=40, draws=400, max_draws=400, block_draws=50,
                        max_tree_depth=6, target_acceptance=0.9, checkpoint_every=0)
    lines = []
    s = fit.run_fit(cfg, progress=False, log=lines.append)
    st = fake_nuts["settings"]
    assert (st.warmup, st.draws, st.target_accept, st.max_tree_depth, st.until_converged, st.block_draws,
            st.max_draws, st.max_wall_s) == (40, 400, 0.9, 6, True, 50, 400, None)
    free = list(s["parameters"])
    assert list(fake_nuts["names"]) == free and fake_nuts["seed"] == 7 and fake_nuts["resume"] is False
    assert fake_nuts["checkpoint_dir"] == tmp_path / "fit" / "chains" and fake_nuts["checkpoint_every"] == 2 ** 62
    M = fake_nuts["mass_matrix"]
    assert isinstance(M, torch.Tensor) and M.shape == (len(free), len(free)) and M.dtype == torch.float64
    assert torch.allclose(M, M.T) and bool(torch.all(torch.linalg.eigvalsh(M) > 0))
    assert s["sampler"] == dict(kind="nuts", n_grad_evals=1234, step_size=0.25, n_divergent=3, stopped="max_draws",
                                draws_per_chain=400, divergences_per_chain=[3, 0])
    assert s["acceptance"] == pytest.approx(0.85) and not s["diagnostics"]["converged"]
    conv, div = lines[-2], lines[-1]  # the verdict last, then the divergences
    assert conv.startswith("warning: the chains have NOT converged") and "sampler.max_draws = 400" in conv
    assert div.startswith("warning: 3 divergent NUTS transitions after warm-up (per chain: 3, 0)")
    assert s["warnings"][-2:] == [conv, div]
    assert any(ln.startswith("sampler: NUTS, 2 chains: 40 warm-up iterations") for ln in lines)
    on_disk = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert on_disk["warnings"] == s["warnings"] and on_disk["sampler"] == s["sampler"]


def test_unconverged_fit_issues_fit_warnings_that_callers_can_turn_into_errors(mock_dir, tmp_path, fake_nuts):
    """Python callers see the warning lines as FitWarning; the CLI's filter silences them (it logs them)."""
    from nuker_mge_plugin import FitWarning
    from nuker_mge_plugin._warnings import silence_fit_warnings

    fake_nuts["result"] = dict(offset=3.0, stopped="max_draws", divergences=[2, 0], n=400)
    cfg = _quick_config(mock_dir, tmp_path / "fit", "nuts", warmup=40, draws=400, max_draws=400, block_draws=50,
                        checkpoint_every=0)
    with pytest.warns(FitWarning) as record:
        s = fit.run_fit(cfg, progress=False, log=lambda *a: None)
    issued = [str(w.message) for w in record if issubclass(w.category, FitWarning)]
    assert any(m.startswith("the chains have NOT converged") for m in issued)
    assert any(m.startswith("2 divergent NUTS transitions") for m in issued)
    assert [f"warning: {m}" for m in issued] == s["warnings"]   # each warning line once, in order
    with warnings.catch_warnings():
        warnings.simplefilter("error")                            # any warning would raise here
        silence_fit_warnings()
        fit.run_fit(cfg, tmp_path / "again", progress=False, log=lambda *a: None)


def test_mala_dispatch_converged(mock_dir, tmp_path, monkeypatch):
    seen = {}

    def run_mala(logp_and_grad, z_start, *, schedule, mass_matrix, mass_matrix_fn, transform, names, seed,
                 checkpoint_dir, resume, checkpoint_every, progress):
        seen.update(schedule=schedule, checkpoint_every=checkpoint_every)
        return FakeResult(z_start, transform, names, kind="mala", n=1000)

    monkeypatch.setattr(fit, "run_mala", run_mala)
    cfg = _quick_config(mock_dir, tmp_path / "fit", "mala", burn_in_stages=1, burn_in_steps=10, n_step_trials=2,
                        step_trial_steps=5, draws=1000, checkpoint_every=10)
    lines = []
    s = fit.run_fit(cfg, progress=False, log=lines.append)
    assert seen["schedule"] == fit.mala_schedule(cfg.sampler) and seen["checkpoint_every"] == 10
    assert s["diagnostics"]["converged"] and s["diagnostics"]["failing"] == []
    assert s["sampler"] == dict(kind="mala", n_grad_evals=1234, step_size=0.25, n_divergent=None, stopped="draws",
                                draws_per_chain=1000)
    assert lines[-1].startswith("converged: r_hat <= 1.01 and ess_bulk, ess_tail >= 400 for every parameter")
    assert s["acceptance"] == 1.0
    assert not any("NOT converged" in w for w in s["warnings"])
    assert s["warnings"] == s["map"]["warnings"]  # only the MAP's (sub-pixel) warnings


# ----------------------------------------------------------------------------- the real NUTS
def test_quick_nuts_fit_end_to_end(mock_dir, tmp_path):
    nuts = pytest.importorskip("nuker_mge_plugin.sampling.nuts")
    if not hasattr(nuts, "run_nuts"):
        pytest.skip("sampling/nuts.py has no run_nuts yet")
    cfg = _quick_config(mock_dir, tmp_path / "fit", "nuts", warmup=30, draws=20, until_converged=False,
                        max_tree_depth=5, checkpoint_every=10)
    lines = []
    s = fit.run_fit(cfg, progress=False, log=lines.append)
    sp = s["sampler"]
    assert sp["kind"] == "nuts" and sp["draws_per_chain"] == 20 and sp["stopped"] == "draws"
    assert len(sp["divergences_per_chain"]) == 2 and sp["n_divergent"] == sum(sp["divergences_per_chain"])
    assert s["chains"] == 2 and s["draws"] == 20 and 0 <= s["acceptance"] <= 1
    assert not s["diagnostics"]["converged"]  # 20 draws
    verdict = [ln for ln in lines if ln.startswith("warning: the chains have NOT converged")]
    assert len(verdict) == 1 and verdict[0] in s["warnings"]
    assert "sampler.until_converged = false" in verdict[0]
    from nuker_mge_plugin.inference.results import read_posterior_netcdf
    _, ss, _ = read_posterior_netcdf(tmp_path / "fit" / "posterior.nc")
    assert {"logp", "step_size", "acceptance_rate", "diverging", "tree_depth"} <= set(ss)
    assert ss["diverging"].dtype == bool and ss["logp"].shape == (2, 20)


def test_quick_nuts_fit_in_the_prior_box_in_float32(mock_dir, tmp_path):
    """sampler.dtype = "float32" with NUTS in the box: its mass matrix, made in float32, was refused
    as not symmetric (rounding of the box's Jacobian products)."""
    cfg = _quick_config(mock_dir, tmp_path / "fit", "nuts", warmup=20, draws=10, until_converged=False,
                        max_tree_depth=4, checkpoint_every=0, space="box", dtype="float32")
    s = fit.run_fit(cfg, progress=False, log=lambda *a: None)
    assert s["sampler"]["draws_per_chain"] == 10 and s["sampler"]["stopped"] == "draws"
    prior = cfg.priors["log10_mbh"]
    assert prior.low <= s["parameters"]["log10_mbh"]["median"] <= prior.high


def test_quick_nuts_fit_in_the_prior_box(mock_dir, tmp_path):
    # space = "box": draws inside the prior bounds, the same summary as in logit coordinates
    cfg = _quick_config(mock_dir, tmp_path / "fit", "nuts", warmup=30, draws=20, until_converged=False,
                        max_tree_depth=5, checkpoint_every=10, space="box")
    lines = []
    s = fit.run_fit(cfg, progress=False, log=lines.append)
    assert any("in the prior box, reflecting off its walls" in ln for ln in lines)
    assert s["sampler"]["kind"] == "nuts" and s["draws"] == 20
    from nuker_mge_plugin.inference.results import read_posterior_netcdf
    draws, _, _ = read_posterior_netcdf(tmp_path / "fit" / "posterior.nc")
    lm, pa = draws["log10_mbh"], draws["pa"]
    assert 6.0 <= lm.min() and lm.max() <= 9.79934 and lm.std() > 0
    assert 200.0 <= pa.min() and pa.max() <= 290.0
