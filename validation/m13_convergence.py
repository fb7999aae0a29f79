"""M13: does every fit converge, how long does it take, and what does one effective draw cost, per sampler kind.

Cases (docs/metrics.rst M13; the sampler issue's targets):

* ``demo``: the demo's mock and fit configuration (strong data, 11 free parameters);
* ``weak``: the demo's galaxy seen weakly -- 14 antennas within 250 m, 16 channels of 40 km/s, a 6.4"
  field -- with the stellar cusp (gamma, intensity_rb) free, 11 free parameters;
* ``free15``: a 64^2 x 0.15" model of a 40-channel, 28-antenna mock with all 15 Table-1 parameters free.

Each (case, kind) is one ``run_fit`` into ``<out>/<case>/<kind>/``; a rerun skips finished fits and
resumes killed ones. ``kind`` is ``nuts`` (the demo configuration's settings, ``make demo``'s:
warm-up, then blocks until R-hat <= 1.01 and bulk and tail ESS >= 400, or ``--max-wall-s``) or
``mala`` (the seed paper's appendix-C schedule as the demo ran it before NUTS: 2 x 150 burn-in,
4 x 40 step-size trials, 600 draws; ``mass_matrix = "adaptive"`` on the weak cases). Prints one
JSON document and writes ``<out>/m13.json``: per fit, converged, max R-hat, min bulk/tail ESS,
gradient evaluations (single-chain), wall times (the sampler's and the whole fit's), min bulk ESS
per 1000 gradient evaluations and per second, divergences, why sampling stopped, log10 M_BH
against the truth, and (NUTS) how well the chains share a batched gradient call (``batching``).

    .venv/bin/python validation/m13_convergence.py [--cases demo,weak,free15] [--kinds nuts,mala]
        [--out validation/out/m13] [--threads 2] [--max-wall-s 1200] [--dtype float32]
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

from common import load_example  # noqa: E402

from nuker_mge_plugin._warnings import silence_fit_warnings  # noqa: E402
from nuker_mge_plugin.inference.config import config_from_dict  # noqa: E402
from nuker_mge_plugin.inference.fit import run_fit  # noqa: E402
from nuker_mge_plugin.mock import mock_from_parameters  # noqa: E402

#: The observations of the cases beside the demo's own (``nuker-mge mock`` [observation] keys).
OBSERVATIONS = {
    "weak": dict(n_pix=128, cell_arcsec=0.05, n_chan=16, dv_kms=40.0, n_ant=14, max_radius_m=250.0, n_times=12,
                 ha_range_h=(-2.0, 2.0), dec_deg=-5.8, sigma_jy=0.01, nsamps=300000, seed=11),
    "free15": dict(n_pix=128, cell_arcsec=0.075, n_chan=40, dv_kms=20.0, n_ant=28, max_radius_m=300.0, n_times=16,
                   ha_range_h=(-2.0, 2.0), dec_deg=-5.8, sigma_jy=0.01, nsamps=500000, seed=12),
}
#: The appendix-C schedule the demo ran before NUTS became the default.
MALA = dict(kind="mala", burn_in_stages=2, burn_in_steps=150, n_step_trials=4, step_trial_steps=40, draws=600)


def case_config(case, kind, out, threads, max_wall_s, dtype=None):
    """The fit configuration (a dict) of ``case`` for sampler ``kind``, its mock made under ``out`` if absent
    (``dtype``: the forward model's ``[sampler] dtype``, default the configuration's own)."""
    mock = load_example("ngc4697_mock.toml")
    obs = dict(mock["observation"]) if case == "demo" else OBSERVATIONS[case]
    obs_path = (Path(out) / case / "obs.npz").resolve()
    obs_path.parent.mkdir(parents=True, exist_ok=True)
    if not obs_path.exists():
        mock_from_parameters(obs_path, mock["truth"], distance_mpc=mock["galaxy"]["distance_mpc"], **obs)
    fit = load_example("ngc4697_fit.toml")
    fit["data"]["path"] = str(obs_path)
    if case == "free15":
        fit["model"].update(cell_arcsec=0.15, n_pix=64)
        for k in ("qintr", "alpha", "gamma_minus_beta", "break_r"):   # Table 1's ranges
            fit["priors"].pop(k)
    if kind == "mala":
        fit["sampler"] = dict(chains=4, seed=7, threads=threads, checkpoint_every=100, **MALA,
                              **({"mass_matrix": "adaptive"} if case != "demo" else {}))
    else:   # the demo's own NUTS settings (what `make demo` runs), on this budget
        fit["sampler"].update(threads=threads, max_wall_s=max_wall_s)
    if dtype is not None:
        fit["sampler"]["dtype"] = dtype
    fit["output"] = {"figures": False}
    return fit


def batching(chains_dir):
    """How well NUTS's chains share one batched gradient call, from its chain store.

    Each leapfrog step evaluates all chains together, so an iteration costs the longest chain's
    trajectory; ``efficiency`` = sum over iterations of the chains' mean leapfrog steps / sum of
    their maximum (1 = no chain waits for another), for the warm-up and the draws separately.
    """
    from nuker_mge_plugin.sampling.backend import ChainStore

    store = ChainStore(str(chains_dir))
    if not store.has_state():
        return None
    store.load_state()   # the number of chunks written
    c = store.concatenated()
    if "n_leapfrog" not in c:
        return None
    n, phase = np.asarray(c["n_leapfrog"], float), np.asarray(c["phase"])
    out = {}
    for name, sel in (("warmup", phase == 0), ("sampling", phase == 1)):
        if sel.any():
            out[name] = dict(efficiency=round(float(n[sel].mean(1).sum() / n[sel].max(1).sum()), 4),
                             mean_leapfrog=round(float(n[sel].mean()), 2),
                             tree_depth_counts=np.bincount(np.asarray(c["tree_depth"])[sel].ravel()).tolist())
    return out


def one(case, kind, out, threads, max_wall_s, dtype=None):
    d = Path(out) / case / (kind if dtype is None else f"{kind}_{dtype}")
    if (d / "row.json").exists():
        row = json.loads((d / "row.json").read_text())
        if kind == "nuts" and "batching" not in row:   # rows written before the field existed
            row["batching"] = batching(d / "chains")
            (d / "row.json").write_text(json.dumps(row, indent=1))
        return row
    cfg = config_from_dict(case_config(case, kind, out, threads, max_wall_s, dtype), base_dir=str(d.parent),
                           source=str(d.parent / f"{kind}.toml"))
    t0 = time.perf_counter()
    s = run_fit(cfg, d, resume=(d / "map.json").exists(), progress=False, log=lambda *a: print(*a, file=sys.stderr))
    wall = time.perf_counter() - t0
    dg, sm, p = s["diagnostics"], s.get("sampler", {}), s["parameters"]["log10_mbh"]
    n_grad = int(s.get("n_grad_evals") or sm.get("n_grad_evals"))
    sampler_wall = s["wall_time_s"] - s["map"]["wall_time_s"]
    row = dict(case=case, kind=kind, converged=dg["converged"], max_r_hat=dg["max_r_hat"],
               min_ess_bulk=dg["min_ess_bulk"], min_ess_tail=dg["min_ess_tail"], failing=dg.get("failing"),
               n_grad_evals=n_grad, ess_bulk_per_1000_grad=1000.0 * dg["min_ess_bulk"] / n_grad,
               ess_bulk_per_s=dg["min_ess_bulk"] / sampler_wall, sampler_wall_s=round(sampler_wall, 1),
               fit_wall_s=round(s["wall_time_s"], 1), this_call_wall_s=round(wall, 1),
               map_wall_s=round(s["map"]["wall_time_s"], 1), stopped=sm.get("stopped"),
               divergences_per_chain=sm.get("divergences_per_chain"), draws_per_chain=sm.get("draws_per_chain"),
               log10_mbh=dict(median=p["median"], hdi_68=p["hdi_68"], std=p["std"],
                              truth=s.get("truth", {}).get("log10_mbh", {}).get("value")),
               n_free=len(s["parameters"]), threads=threads, dtype=cfg.sampler.dtype,
               batching=batching(d / "chains") if kind == "nuts" else None)
    (d / "row.json").write_text(json.dumps(row, indent=1))
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="demo,weak,free15")
    ap.add_argument("--kinds", default="nuts,mala")
    ap.add_argument("--out", default="validation/out/m13")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-wall-s", type=float, default=1200.0, help="NUTS sampling budget per fit [s]")
    ap.add_argument("--dtype", choices=("float64", "float32"), default=None,
                    help="the forward model's dtype (default: the configuration's; a fit goes to <kind>_<dtype>/)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    silence_fit_warnings()  # run_fit's warning lines are logged to stderr already
    rows = [one(c, k, a.out, a.threads, a.max_wall_s, a.dtype) for c in a.cases.split(",") for k in a.kinds.split(",")]
    doc = dict(metric="M13", machine_threads=a.threads, rows=rows)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "m13.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
