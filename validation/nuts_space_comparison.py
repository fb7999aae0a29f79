"""NUTS in the priors' logit coordinates against NUTS in the prior box (reflecting walls), on one weak mock.

The mock is mock ``--mock`` of ``validation/calibration.py`` (a 3.2" field, 12 channels, 16 antennas
within 200 m; 11 free parameters drawn from the study's priors, the stellar cusp free): weak data
whose posterior piles against prior bounds. One MAP and one Fisher matrix at it (the fit's own
``fit_map`` and ``FitProblem.fisher``, kept in ``<out>/map.json``), then for each space the same
NUTS run (same starts, seed, warm-up, blocks, limits), through ``sampling.nuts.run_nuts``:

* ``logit``: ``FitProblem.logp_and_grad`` in the sigmoid bijection's ``z`` (with its log-Jacobian);
* ``box``: ``FitProblem.logp_and_grad_box`` in ``u = (theta - low) / (high - low)``, trajectories
  reflecting off the walls of [0, 1]^d; starts and Fisher covariance carried over by du/dz.

Prints one JSON document (and writes ``<out>/nuts_space_comparison.json``): per space, why the
sampling stopped, draws per chain, gradient evaluations, the convergence report (R-hat, bulk and
tail ESS per parameter), min bulk ESS per 1000 gradient evaluations, divergences, mean leapfrog
steps per draw, energy BFMI, the wall time, and the posterior medians beside the truths. Chains are
checkpointed under ``<out>/<space>/`` and a rerun resumes them.

    .venv/bin/python validation/nuts_space_comparison.py [--mock 0] [--spaces logit,box] [--warmup 300]
        [--draws 250] [--max-draws 2000] [--max-wall-s 1500] [--threads 1] [--out validation/out/nuts_space]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import calibration as cal  # noqa: E402

from nuker_mge_plugin.inference.config import config_from_dict  # noqa: E402
from nuker_mge_plugin.inference.fit import build_problem, fit_map  # noqa: E402
from nuker_mge_plugin.sampling.nuts import NUTSSettings, run_nuts  # noqa: E402


def problem(i, out):
    """The FitProblem of calibration mock ``i`` (Student-t), its MAP (made once) and truth."""
    d = Path(out).resolve()  # the configuration resolves data.path against base_dir: keep it absolute
    d.mkdir(parents=True, exist_ok=True)
    truth = cal._mock(i, d, 100)
    raw = cal.fit_config(d / "obs.npz", "student_t", 100 + i)
    raw["sampler"] = {"chains": 4, "seed": 100 + i}
    cfg = config_from_dict(raw, base_dir=str(d), source=str(d / "fit.toml"))
    prob = build_problem(cfg, progress=False)
    gen = torch.Generator().manual_seed(cfg.sampler.seed)
    mp = d / "map.json"
    if mp.exists():
        m = json.loads(mp.read_text())
    else:
        m = fit_map(prob, gen, progress=False, log=lambda *_: None)
        mp.write_text(json.dumps(m))
    return prob, gen, torch.tensor(m["z"], dtype=prob.model.dtype), truth


def run(prob, gen_state, z_map, space, a, out):
    dt = prob.model.dtype
    fish = prob.fisher(z_map)
    gen = torch.Generator()
    gen.set_state(gen_state)
    xi = torch.randn((4, prob.space.n_free), generator=gen, dtype=torch.float64)
    z0 = z_map[None] + 0.5 * xi @ torch.as_tensor(fish.cholesky, dtype=dt).T
    settings = NUTSSettings(warmup=a.warmup, draws=a.draws, block_draws=a.draws, max_draws=a.max_draws,
                            max_wall_s=a.max_wall_s)
    common = dict(settings=settings, names=prob.space.free_names, seed=1, progress=False,
                  checkpoint_dir=Path(out) / space, resume=True)
    cov = torch.as_tensor(fish.covariance, dtype=dt)
    t0 = time.perf_counter()
    if space == "logit":
        res = run_nuts(prob.logp_and_grad, z0, mass_matrix=cov, transform=prob.space.constrain, **common)
    else:
        with torch.no_grad():
            u0 = prob.theta_to_box(prob.space.constrain(z0)).clamp(0.0, 1.0)
            um = prob.theta_to_box(prob.space.constrain(z_map[None]))[0]
        jac = um * (1.0 - um)
        n = prob.space.n_free
        res = run_nuts(prob.logp_and_grad_box, u0, mass_matrix=cov * jac[:, None] * jac[None, :],
                       bounds=(torch.zeros(n, dtype=dt), torch.ones(n, dtype=dt)), transform=prob.box_to_theta,
                       **common)
    rep = res.convergence
    return dict(space=space, stopped=res.stopped, draws_per_chain=int(res.samples.shape[1]),
                n_grad_evals=res.n_grad_evals, wall_s=round(res.wall_time, 1), this_call_s=time.perf_counter() - t0,
                step_size=res.step_size, mean_leapfrog_per_draw=float(res.n_leapfrog.mean()),
                divergences_per_chain=res.divergences_per_chain, mean_accept_stat=float(res.accept_stat.mean()),
                converged=rep["converged"], max_r_hat=rep["max_r_hat"], min_ess_bulk=rep["min_ess_bulk"],
                min_ess_tail=rep["min_ess_tail"], ess_bulk_per_1000_grad=1000 * rep["min_ess_bulk"] / res.n_grad_evals,
                r_hat={k: round(v, 4) for k, v in rep["r_hat"].items()},
                ess_bulk={k: round(v) for k, v in rep["ess_bulk"].items()},
                energy_bfmi=[round(float(b), 3) for b in res.energy_bfmi()],
                median={k: float(np.median(v)) for k, v in res.draws().items()})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mock", type=int, default=0)
    ap.add_argument("--spaces", default="logit,box")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=250, help="first block and each further block [draws per chain]")
    ap.add_argument("--max-draws", type=int, default=2000)
    ap.add_argument("--max-wall-s", type=float, default=1500.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="validation/out/nuts_space")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out) / f"mock_{a.mock:03d}"
    prob, gen, z_map, truth = problem(a.mock, out)
    state = gen.get_state()     # every space starts from the same dispersed points
    rows = [run(prob, state, z_map, s, a, out) for s in a.spaces.split(",")]
    doc = dict(mock=a.mock, threads=a.threads, truth={k: truth[k] for k in prob.space.free_names}, runs=rows)
    (out / "nuts_space_comparison.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
