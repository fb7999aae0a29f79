"""M6: zero non-finite log-posterior values and gradients at random points of the whole prior box.

The demo's NGC 4697-like KinMS mock (nuker_mge_plugin/examples/ngc4697_mock.toml) and the demo's
fit configuration, but with **all 15** Table-1 parameters free over their Table-1 ranges
(systemic_velocity, x, y over the data-derived ranges: the band, +- half the model field). Points
are drawn from the prior in the sampler's unconstrained space and evaluated in batches, as MALA
evaluates its chains: one batched forward and backward per batch. Prints one JSON object with the
counts of non-finite log-posteriors and of points with any non-finite gradient component (the target
is zero of each), the parameters of the first few offenders, and the cost per point.

    .venv/bin/python validation/m6_gradient_sweep.py [--n 10000] [--batch 50] [--backend exact] [--seed 1]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nuker_mge_plugin.inference.config import config_from_dict  # noqa: E402
from nuker_mge_plugin.inference.fit import build_problem  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import demo_fit_config  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000, help="points of the prior box")
    ap.add_argument("--batch", type=int, default=50, help="points per batched forward + backward")
    ap.add_argument("--backend", default="exact", choices=("exact", "nn"))
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="validation/out/m6")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fit = demo_fit_config(out)
    fit["priors"] = {}  # every parameter free over its Table-1 (or data-derived) range
    fit["model"]["backend"] = a.backend
    fit["sampler"]["dtype"] = a.dtype
    cfg = config_from_dict(fit, base_dir=str(out), source=str(out / "fit.toml"))
    prob = build_problem(cfg, progress=False)
    space = prob.space
    gen = torch.Generator().manual_seed(a.seed)
    z_all = space.sample_prior(a.n, gen, unconstrained=True).to(prob.model.dtype)

    n_bad_lp = n_bad_grad = 0
    offenders = []
    lp_min, lp_max = float("inf"), -float("inf")
    t0 = time.perf_counter()
    for i in tqdm(range(0, a.n, a.batch), desc="M6 sweep", unit="batch"):
        z = z_all[i:i + a.batch]
        lp, grad = prob.logp_and_grad(z)
        bad_lp = ~torch.isfinite(lp)
        bad_grad = ~torch.isfinite(grad).all(dim=1)
        n_bad_lp += int(bad_lp.sum())
        n_bad_grad += int(bad_grad.sum())
        ok = ~bad_lp
        if bool(ok.any()):
            lp_min = min(lp_min, float(lp[ok].min()))
            lp_max = max(lp_max, float(lp[ok].max()))
        for j in torch.nonzero(bad_lp | bad_grad).flatten().tolist()[: max(0, 5 - len(offenders))]:
            theta = space.constrain(z[j:j + 1])[0]
            offenders.append({n: float(v) for n, v in zip(space.free_names, theta)})
    wall = time.perf_counter() - t0
    res = dict(
        metric="M6", n_points=a.n, batch=a.batch, backend=a.backend, dtype=a.dtype, free=list(space.free_names),
        n_cells=prob.cells.n_cells, grid=f"{cfg.model.n_pix}^2 x {cfg.model.cell_arcsec}\" x "
                                         f"{prob.cells.n_chan} channels",
        nonfinite_log_prob=n_bad_lp, nonfinite_gradient=n_bad_grad, offenders=offenders,
        log_prob_range=[lp_min, lp_max], wall_time_s=round(wall, 1), ms_per_point=round(1e3 * wall / a.n, 2),
        threads=a.threads, pass_=n_bad_lp == 0 and n_bad_grad == 0)
    print(json.dumps(res, indent=1))
    (out / "m6.json").write_text(json.dumps(res, indent=1))
    return 0 if res["pass_"] else 1


if __name__ == "__main__":
    sys.exit(main())
