"""M14: simulation-based calibration of the whole fit (Talts et al. 2018), MAP and NUTS included.

Each replicate draws the free parameters from the fit's own prior, simulates the gridded cells
from the fit's own forward model with the likelihood's own noise (a Gaussian of the gridder's
per-cell sigma, ``[likelihood] kind = "gaussian"``, ``sigma_scale = 1``, no overlap weights: the
generative model the posterior is exact for), then fits them as ``nuker-mge fit`` does (the MAP
from the ``[map]`` defaults, the Fisher matrix, NUTS in the prior box until R-hat <= 1.01 and
bulk and tail ESS >= 400, or ``--max-draws``), and records the rank of the truth among ``L``
draws thinned evenly from the pooled chains. If the sampler (and the MAP that starts it) are
right, every parameter's ranks are uniform on 0..L over the replicates, whatever the posterior's
shape: the chi^2 p-value of each histogram (``--bins`` bins) is reported, over all replicates and
over the converged ones, and drawn with the 99% band of a uniform histogram (binomial quantiles).

The cells and the uv coverage are the quick demo's (``ngc4697_mock_quick.toml``: 32^2 x 0.2",
12 channels, 10 antennas) on the quick fit's grid (``ngc4697_fit_quick.toml``: 16^2 x 0.4", nsub
2), with its free parameters: log10 M_BH over the whole Table-1 range (6 to 9.8), so that many
truths are unresolved and their posteriors pile at the lower bound, inclination, PA, systemic
velocity and flux. Each replicate's row is written to ``<out>/rows/`` when done, so a rerun
resumes; prints one JSON document and writes ``<out>/sbc.json`` and ``<out>/sbc.png``.

    .venv/bin/python validation/sbc.py [--n 100] [--ranks 99] [--bins 10] [--threads 1]
        [--max-draws 2000] [--out validation/out/sbc] [--figure docs/sbc.png]

Replicates are independent: several processes may share ``--out`` with disjoint ``--first`` /
``--n`` ranges (one per core), then ``--report`` summarises every row written there.
"""

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_example  # noqa: E402

from nuker_mge_plugin._progress import progress_bar  # noqa: E402
from nuker_mge_plugin.inference.config import config_from_dict  # noqa: E402
from nuker_mge_plugin.inference.fit import build_problem, fit_map, run_sampler  # noqa: E402
from nuker_mge_plugin.inference.likelihood import GriddedLikelihood  # noqa: E402
from nuker_mge_plugin.mock import mock_from_parameters  # noqa: E402
from nuker_mge_plugin.sampling.diagnostics import convergence  # noqa: E402

#: NUTS as the demo runs it (ngc4697_fit.toml), with the quick fit's chains raised to 4.
SAMPLER = dict(kind="nuts", chains=4, seed=7, warmup=200, draws=200, until_converged=True, block_draws=100,
               checkpoint_every=0, space="box")


def sbc_problem(out, threads, max_draws):
    """The quick fit's problem (a :class:`FitProblem`) on the quick mock's cells, Gaussian likelihood."""
    mock = load_example("ngc4697_mock_quick.toml")
    obs_path = (Path(out) / "obs.npz").resolve()
    obs_path.parent.mkdir(parents=True, exist_ok=True)
    if not obs_path.exists():
        mock_from_parameters(obs_path, mock["truth"], distance_mpc=mock["galaxy"]["distance_mpc"],
                             **mock["observation"])
    fit = load_example("ngc4697_fit_quick.toml")
    fit["data"]["path"] = str(obs_path)
    fit.pop("map")                                   # the [map] defaults, as a user's fit
    fit["sampler"] = dict(SAMPLER, threads=threads, max_draws=max_draws)
    fit["likelihood"] = dict(kind="gaussian", sigma_scale=1.0, overlap_weights=False)
    fit["output"] = {"figures": False}
    cfg = config_from_dict(fit, base_dir=str(obs_path.parent), source=str(obs_path.parent / "sbc.toml"))
    return build_problem(cfg, progress=False)


def simulate(prob, generator):
    """Truth (d,) [parameter units] from the prior and a problem whose cells are the model there plus noise."""
    space = prob.space
    theta = space.sample_prior(1, generator)[0]
    with torch.no_grad():
        m = prob.model(space.to_dict(theta[None].to(prob.model.device, prob.model.dtype)))[0]
    sigma = prob.cells.sigma.to(torch.float64)
    noise = torch.complex(torch.randn(sigma.shape, generator=generator, dtype=torch.float64),
                          torch.randn(sigma.shape, generator=generator, dtype=torch.float64))
    vis = m.to(torch.complex128) + sigma * noise.to(sigma.device)
    like = GriddedLikelihood(vis, sigma, torch.full_like(sigma, 2.0), kind="gaussian", sigma_scale=1.0)
    truth = {k: float(v) for k, v in zip(space.free_names, theta)}
    return theta, dataclasses.replace(prob, likelihood=like.to(prob.model.device), truth=truth)


def replicate(prob, i, n_ranks, rows_dir):
    """Fit replicate ``i`` (seeded by ``i``) and return its row: truth, ranks, convergence, cost."""
    path = rows_dir / f"{i:04d}.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    theta, prob_i = simulate(prob, torch.Generator().manual_seed(10_000 + i))
    gen = torch.Generator().manual_seed(i)
    quiet = lambda *a: None  # noqa: E731
    m = fit_map(prob_i, gen, progress=False, log=quiet)
    z_map = torch.tensor(m["z"], dtype=prob.model.dtype, device=prob.model.device)
    fish = prob_i.fisher(z_map)
    with tempfile.TemporaryDirectory() as tmp:
        res = run_sampler(prob_i, z_map, fish, gen, Path(tmp), progress=False)
    draws = res.draws()
    rep = convergence(draws)
    pooled = {k: np.asarray(v).reshape(-1) for k, v in draws.items()}
    n_total = next(iter(pooled.values())).size
    take = np.linspace(0, n_total - 1, n_ranks).round().astype(int)
    ranks = {k: int((v[take] < prob_i.truth[k]).sum()) for k, v in pooled.items()}
    row = dict(i=i, truth=prob_i.truth, ranks=ranks, converged=bool(rep["converged"]),
               max_r_hat=float(rep["max_r_hat"]), min_ess_bulk=float(rep["min_ess_bulk"]),
               min_ess_tail=float(rep["min_ess_tail"]), stopped=str(res.stopped),
               draws_per_chain=int(np.shape(next(iter(draws.values())))[1]), n_divergent=int(res.n_divergent),
               n_grad_evals=int(res.n_grad_evals), map_evals=int(m["n_evals"]), map_wall_s=round(m["wall_time_s"], 2),
               wall_s=round(time.perf_counter() - t0, 2))
    tmp_path = path.with_suffix(".part")
    tmp_path.write_text(json.dumps(row, indent=1))
    tmp_path.replace(path)
    return row


def rank_test(ranks, n_ranks, n_bins):
    """chi^2 uniformity test of ranks in 0..n_ranks over ``n_bins`` equal bins: (counts, p-value)."""
    counts = np.histogram(ranks, bins=n_bins, range=(-0.5, n_ranks + 0.5))[0]
    return counts, float(stats.chisquare(counts).pvalue) if len(ranks) else float("nan")


def summarise(rows, names, n_ranks, n_bins):
    conv = [r for r in rows if r["converged"]]
    out = dict(n=len(rows), n_converged=len(conv), n_with_divergences=sum(r["n_divergent"] > 0 for r in rows),
               median_wall_s=float(np.median([r["wall_s"] for r in rows])),
               total_wall_s=round(float(sum(r["wall_s"] for r in rows)), 1),
               median_draws_per_chain=float(np.median([r["draws_per_chain"] for r in rows])),
               max_r_hat=float(max(r["max_r_hat"] for r in rows)),
               min_ess_bulk=float(min(r["min_ess_bulk"] for r in rows)),
               min_ess_tail=float(min(r["min_ess_tail"] for r in rows)), parameters={})
    for k in names:
        c_all, p_all = rank_test([r["ranks"][k] for r in rows], n_ranks, n_bins)
        c_conv, p_conv = rank_test([r["ranks"][k] for r in conv], n_ranks, n_bins)
        out["parameters"][k] = dict(counts=c_all.tolist(), p_value=p_all, p_value_converged=p_conv,
                                    counts_converged=c_conv.tolist())
    out["min_p_value"] = min(v["p_value"] for v in out["parameters"].values())
    out["uniform_p_gt_0.01"] = bool(out["min_p_value"] > 0.01)
    return out


def plot(summary, n_bins, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pars = summary["parameters"]
    n = summary["n"]
    lo, hi = stats.binom.ppf([0.005, 0.995], n, 1.0 / n_bins)
    fig, axes = plt.subplots(1, len(pars), figsize=(2.6 * len(pars), 2.4), sharey=True)
    for ax, (k, v) in zip(np.atleast_1d(axes), pars.items()):
        ax.axhspan(lo, hi, color="0.85", label="99% of uniform")
        ax.axhline(n / n_bins, color="0.5", lw=0.8)
        ax.bar(np.arange(n_bins), v["counts"], width=0.9, color="C0")
        ax.set_title(f"{k}\np = {v['p_value']:.2f}", fontsize=9)
        ax.set_xlabel("rank bin")
        ax.set_xticks([])
    np.atleast_1d(axes)[0].set_ylabel(f"replicates (of {n})")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"SBC of the whole fit (MAP + NUTS): {n} replicates, {summary['n_converged']} converged",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="replicates")
    ap.add_argument("--first", type=int, default=0, help="index of the first replicate (replicate i is seeded by i)")
    ap.add_argument("--report", action="store_true", help="fit nothing: summarise the rows already in --out")
    ap.add_argument("--ranks", type=int, default=99, help="thinned draws L per replicate (ranks 0..L)")
    ap.add_argument("--bins", type=int, default=10, help="histogram bins (L + 1 divisible by it)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-draws", type=int, default=2000, help="NUTS draws per chain at most")
    ap.add_argument("--out", default="validation/out/sbc")
    ap.add_argument("--figure", default=None, help="also copy the figure here (docs/sbc.png)")
    a = ap.parse_args(argv)
    if (a.ranks + 1) % a.bins:
        ap.error(f"--bins {a.bins} must divide --ranks + 1 = {a.ranks + 1}")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    rows_dir = out / "rows"
    rows = [json.loads(f.read_text()) for f in sorted(rows_dir.glob("*.json"))] if a.report else []
    if a.report and not rows:
        ap.error(f"--report: no replicate rows in {rows_dir}")
    prob = sbc_problem(out, a.threads, a.max_draws)
    if not a.report:
        rows_dir.mkdir(parents=True, exist_ok=True)
        with progress_bar(total=a.n, desc="SBC replicates", unit="fit") as bar:
            for i in range(a.first, a.first + a.n):
                rows.append(replicate(prob, i, a.ranks, rows_dir))
                bar.update(1)
    summary = summarise(rows, prob.space.free_names, a.ranks, a.bins)
    doc = dict(metric="M14", ranks=a.ranks, bins=a.bins, threads=a.threads, n_cells=prob.cells.n_cells,
               free=list(prob.space.free_names), sampler=SAMPLER | dict(max_draws=a.max_draws), **summary)
    (out / "sbc.json").write_text(json.dumps(doc, indent=1))
    plot(summary, a.bins, out / "sbc.png")
    if a.figure:
        shutil.copyfile(out / "sbc.png", a.figure)
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
