"""The samplers against exact answers: MALA and NUTS on the targets of nuker_mge_plugin/sampling/targets.py.

For each sampler kind and each target (an ill-conditioned 15-d Gaussian, a banana, Neal's centred
funnel, parameters piled against a prior bound) one seeded run of ``--chains`` chains from the
target's dispersed starts; the draws (in the target's checked space) are compared with the exact
mean, variance and 5% / 95% quantiles by ``targets.check_moments``: z = (estimate - exact) / MCSE.

Reported per target and kind: ``pass`` (every checked |z| < ``--n-mcse``, which alone is ``z_pass``,
and max R-hat < 1.05), ``converged`` (the fit's verdict: R-hat <= 1.01, bulk and tail ESS >= 400 for
every coordinate), ``max_abs_z`` and ``worst``, every z (``z``: statistic -> coordinate -> z), min
bulk / tail ESS and max R-hat over the coordinates (sampling/diagnostics.py), ``n_grad_evals``
(single-chain gradient evaluations of the whole run, warm-up included), ESS per 1000 gradient
evaluations (min bulk and min tail ESS), divergences (NUTS: divergent sampling transitions; MALA:
rejected non-finite proposals, all stages), the run's wall seconds and the settings used. The
funnel's var(x_i) is reported but not counted (targets.funnel's docstring: its z is not N(0, 1)
even for exact draws).

Run lengths: MALA runs its appendix-C schedule with ``adapt_mass_matrix`` (burn-in stages per
target below), then ``--draws`` draws times a per-target thinning; NUTS runs ``--warmup``
transitions of Stan's windowed warm-up, then ``--draws`` draws. The banana runs NUTS at
target_accept 0.95 (its curvature, ~16 x1^2, makes the step size adapted for 0.8 unstable in the
tails: divergences); ``--nuts-target-accept`` overrides it for every target.

    .venv/bin/python validation/sampler_targets.py [--kinds mala,nuts] [--targets all] [--draws 2000]
        [--warmup 1000] [--chains 4] [--seed 1] [--threads 1] [--out validation/out/sampler_targets]

Prints one JSON document and writes it to ``OUT/sampler_targets.json``.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nuker_mge_plugin.sampling import diagnostics  # noqa: E402
from nuker_mge_plugin.sampling import targets as T  # noqa: E402

#: R-hat below which a run counts as mixed for ``pass`` (the sanity bound of tests/test_sampling_targets.py).
RHAT_SANITY = 1.05

#: MALA burn-in stages and thinning per target (draws kept = --draws; steps = draws x thin). MALA mixes
#: slowly on the banana (bulk ESS ~60 from 4 x 8000 steps), hence its thinning.
MALA_PLAN = {"gaussian_ill_conditioned": dict(burn_in=(200, 400, 800, 1600), thin=1),
             "banana": dict(burn_in=(200, 400, 800, 1600), thin=16),
             "funnel": dict(burn_in=(200, 400, 800, 1600), thin=1),
             "bounded": dict(burn_in=(200, 400, 800), thin=1)}
#: NUTS target acceptance per target (Stan's default 0.8 but for the banana).
NUTS_ACCEPT = {"gaussian_ill_conditioned": 0.8, "banana": 0.95, "funnel": 0.8, "bounded": 0.8}


def _finite(x):
    """A float for JSON (NaN and inf as strings)."""
    x = float(x)
    return x if math.isfinite(x) else str(x)


def run_mala(target, a, seed):
    """(unconstrained draws (C, N, d), n_grad_evals, divergences, wall s, settings) of one MALA run."""
    from nuker_mge_plugin.inference import MALASchedule, run_mala as _run
    plan = MALA_PLAN[target.name]
    sched = MALASchedule(burn_in=plan["burn_in"], step_size_steps=50, n_draws=a.draws, thin=plan["thin"],
                         adapt_mass_matrix=True)
    z0 = target.initial(a.chains, torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    res = _run(target.logp_and_grad, z0, schedule=sched, seed=seed, progress=False)
    wall = time.perf_counter() - t0
    settings = dict(sched.as_dict(), step_size=res.step_size, acceptance_sample=res.acceptance["sample"])
    return res.samples_unconstrained, res.n_grad_evals, res.n_nonfinite_total, None, wall, settings


def run_nuts(target, a, seed):
    """(unconstrained draws (C, N, d), n_grad_evals, divergences, per chain, wall s, settings) of one NUTS run."""
    from nuker_mge_plugin.sampling.nuts import NUTSSettings, run_nuts as _run
    accept = a.nuts_target_accept if a.nuts_target_accept is not None else NUTS_ACCEPT[target.name]
    st = NUTSSettings(warmup=a.warmup, draws=a.draws, target_accept=accept, max_tree_depth=10,
                      until_converged=False)
    z0 = target.initial(a.chains, torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    res = _run(target.logp_and_grad, z0, settings=st, seed=seed, progress=False)
    wall = time.perf_counter() - t0
    ss = res.sample_stats()
    settings = dict(warmup=a.warmup, draws=a.draws, target_accept=accept, max_tree_depth=10,
                    step_size=res.step_size, mean_tree_depth=float(np.mean(ss["tree_depth"])),
                    max_tree_depth_reached=int(np.max(ss["tree_depth"])),
                    mean_n_leapfrog=float(np.mean(ss["n_leapfrog"])))
    return (res.samples_unconstrained, res.n_grad_evals, res.n_divergent, res.divergences_per_chain, wall,
            settings)


RUNNERS = {"mala": run_mala, "nuts": run_nuts}


def summarise(target, draws_z, n_grad, n_div, div_chain, wall, settings, n_mcse):
    """The JSON record of one run."""
    rep = T.check_moments(target.constrain(draws_z), target, n_mcse=n_mcse)
    names = target.names
    per_1000 = 1000.0 / n_grad if n_grad else math.nan
    ok_rhat = bool(rep["max_r_hat"] < RHAT_SANITY)   # NaN compares False
    converged = bool(ok_rhat and rep["max_r_hat"] <= diagnostics.RHAT_MAX and rep["min_ess_bulk"] >= diagnostics.ESS_MIN
                     and rep["min_ess_tail"] >= diagnostics.ESS_MIN)
    out = {"pass": bool(rep["pass"] and ok_rhat), "z_pass": rep["pass"], "converged": converged,
           "max_abs_z": _finite(rep["max_abs_z"]), "worst": rep["worst"],
           "z": {s: {n: _finite(v) for n, v in zip(names, rep["z"][s])} for s in T.STATISTICS},
           "unchecked": rep["unchecked"],
           "min_ess_bulk": _finite(rep["min_ess_bulk"]), "min_ess_tail": _finite(rep["min_ess_tail"]),
           "max_r_hat": _finite(rep["max_r_hat"]), "n_grad_evals": int(n_grad),
           "ess_bulk_per_1000_grad_evals": _finite(rep["min_ess_bulk"] * per_1000),
           "ess_tail_per_1000_grad_evals": _finite(rep["min_ess_tail"] * per_1000),
           "divergences": int(n_div), "wall_s": round(wall, 2), "draws_shape": list(draws_z.shape),
           "settings": settings}
    if div_chain is not None:
        out["divergences_per_chain"] = div_chain
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="mala,nuts", help="comma-separated: mala, nuts")
    ap.add_argument("--targets", default="all", help="comma-separated target names, or all")
    ap.add_argument("--draws", type=int, default=2000, help="draws kept per chain")
    ap.add_argument("--warmup", type=int, default=1000, help="NUTS warm-up transitions per chain")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-mcse", type=float, default=4.0, help="pass threshold on |z|")
    ap.add_argument("--nuts-target-accept", type=float, default=None, help="override the per-target table")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="validation/out/sampler_targets")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in RUNNERS]
    if bad:
        ap.error(f"unknown kind(s) {bad}; known: {sorted(RUNNERS)}")
    targets = T.all_targets()
    names = list(targets) if a.targets == "all" else [n.strip() for n in a.targets.split(",")]
    missing = [n for n in names if n not in targets]
    if missing:
        ap.error(f"unknown target(s) {missing}; known: {sorted(targets)}")

    doc = dict(check="samplers vs exact moments and quantiles (nuker_mge_plugin/sampling/targets.py)",
               chains=a.chains, draws=a.draws, nuts_warmup=a.warmup, seed=a.seed, n_mcse=a.n_mcse,
               torch_threads=torch.get_num_threads(),
               targets={n: dict(dim=targets[n].dim, params={k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                                           for k, v in targets[n].params.items() if k != "cov"},
                                notes=targets[n].notes,
                                exact={s: dict(zip(targets[n].names, map(float, targets[n].exact(s))))
                                       for s in T.STATISTICS})
                        for n in names},
               runs={})
    for kind in kinds:
        doc["runs"][kind] = {}
        for n in names:
            t = targets[n]
            print(f"[sampler_targets] {kind} on {n} ...", file=sys.stderr, flush=True)
            doc["runs"][kind][n] = summarise(t, *RUNNERS[kind](t, a, a.seed), n_mcse=a.n_mcse)
    doc["all_pass"] = {k: {n: r["pass"] for n, r in v.items()} for k, v in doc["runs"].items()}
    text = json.dumps(doc, indent=2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampler_targets.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
