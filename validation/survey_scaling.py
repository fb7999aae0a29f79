"""Scaling of ``nuker-mge survey``: the same 8-galaxy survey on 1 and on 2 LocalCluster workers of
this machine, side by side, and on paper a 30-galaxy survey on a GPU cluster.

    python validation/survey_scaling.py [--n-galaxies 8] [--workers 1,2] [--out DIR]
                                        [--full-fit-s 420] [--gpu-speedup 1] [--queue-wait-s 0]

The galaxies are quick mocks (``examples/ngc4697_mock_quick.toml`` with observation seeds
1..N) fitted with ``examples/ngc4697_fit_quick.toml`` (one torch thread per fit): each survey is
timed from the command's start to its results table, LocalCluster start-up included. Prints JSON:
wall time per worker count, speed-up and parallel efficiency against 1 worker, the per-fit cost
(median wall time of one fit inside a worker, from results.csv), the survey's fixed overhead, and
the paper estimate, whose assumptions are in the JSON: a production fit's cost on one GPU is NOT
measured here (no GPU on this machine), so it is a parameter, ``--full-fit-s / --gpu-speedup``
(default: the ~7-minute CPU demo fit, i.e. no GPU gain assumed).
"""

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def make_galaxies(root, n):
    from nuker_mge_plugin.mock import load_mock_config, mock_from_parameters
    from nuker_mge_plugin.survey import __file__ as sv_file
    examples = Path(sv_file).parent / "examples"
    truth, distance, obs = load_mock_config(examples / "ngc4697_mock_quick.toml")
    fit = (examples / "ngc4697_fit_quick.toml").read_text()
    names = []
    for i in range(1, n + 1):
        name = f"mock_{i:02d}"
        mock_from_parameters(root / f"{name}.npz", truth, distance_mpc=distance, **{**obs, "seed": i})
        (root / f"{name}.toml").write_text(fit.replace('"ngc4697_mock_quick.npz"', f'"{name}.npz"'))
        names.append(f"{name}.toml")
    return names


def run_one(root, names, n_workers, out):
    from nuker_mge_plugin.cli import main
    survey = root / f"survey_{n_workers}w.toml"
    survey.write_text(f"[survey]\ngalaxies = {json.dumps(names)}\nretries = 1\n"
                      f'[scheduler]\naddress = "local"\nn_workers = {n_workers}\ntorch_threads = 1\n'
                      'dashboard_address = ":0"\n')
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    with open(root / f"survey_{n_workers}w.log", "w") as log, contextlib.redirect_stdout(log):
        rc = main(["survey", str(survey), "--out", str(out), "--no-progress"])
    wall = time.perf_counter() - t0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    fits = [float(r["wall_time_s"]) for r in rows if r["status"] == "done"]
    return dict(n_workers=n_workers, rc=rc, wall_s=round(wall, 2), n_done=len(fits),
                fit_wall_s_median=round(statistics.median(fits), 2) if fits else None,
                fit_wall_s_sum=round(sum(fits), 2),
                workers_used=len({r["worker"] for r in rows}),
                mbh_median=[round(float(r["log10_mbh_median"]), 3) for r in rows])


def paper(n_gal, per_fit_s, overhead_s, startup_s, queue_wait_s, gpus_list):
    out = []
    for g in gpus_list:
        waves = math.ceil(n_gal / g)
        wall = queue_wait_s + startup_s + waves * (per_fit_s + overhead_s)
        out.append(dict(gpus=g, jobs=g, waves=waves, wall_h=round(wall / 3600, 3),
                        gpu_hours_billed=round(g * (wall - queue_wait_s) / 3600, 3),
                        efficiency=round(n_gal * per_fit_s / (g * (wall - queue_wait_s)), 3)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-galaxies", type=int, default=8)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--out", default=None, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--full-fit-s", type=float, default=420.0,
                    help="a production fit's (ngc4697_fit.toml) wall time on one device [s]; default: the "
                         "README's ~7-minute CPU demo fit")
    ap.add_argument("--gpu-speedup", type=float, default=1.0, help="assumed GPU / CPU speed ratio of one fit")
    ap.add_argument("--queue-wait-s", type=float, default=0.0, help="assumed batch-queue wait before jobs start")
    ap.add_argument("--paper-galaxies", type=int, default=30)
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = Path(a.out).resolve() if a.out else Path(tempfile.mkdtemp(prefix="survey_scaling_"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    names = make_galaxies(root, a.n_galaxies)
    t_mocks = time.perf_counter() - t0
    load0 = os.getloadavg()
    runs = [run_one(root, names, int(w), root / f"out_{w}w") for w in a.workers.split(",")]
    base = runs[0]
    for r in runs:
        r["speedup"] = round(base["wall_s"] / r["wall_s"], 3)
        r["efficiency"] = round(r["speedup"] * base["n_workers"] / r["n_workers"], 3)
    per_fit = base["fit_wall_s_median"]
    # what the survey adds to its fits: cluster start-up, scheduling, worker start (torch import), tables
    overhead_total = base["wall_s"] - base["fit_wall_s_sum"]
    full = a.full_fit_s / a.gpu_speedup
    result = dict(
        machine=dict(cpus=os.cpu_count(), load_average_before=[round(x, 2) for x in load0],
                     load_average_after=[round(x, 2) for x in os.getloadavg()],
                     note="a shared 2-core machine: other jobs' load lowers the 2-worker speed-up"),
        n_galaxies=a.n_galaxies, mock_generation_s=round(t_mocks, 1), runs=runs,
        per_fit_cost_s=dict(quick_fit_median_in_worker=per_fit,
                            survey_overhead_total_s=round(overhead_total, 2),
                            survey_overhead_per_galaxy_s=round(overhead_total / a.n_galaxies, 2)),
        paper_estimate=dict(
            assumptions=dict(
                galaxies=a.paper_galaxies, one_fit_per_gpu=True, chains_batched_on_the_gpu=True,
                production_fit_s_on_one_device=a.full_fit_s, gpu_speedup_over_cpu=a.gpu_speedup,
                per_fit_gpu_s=full, per_fit_gpu_s_measured=False,
                per_task_overhead_s=round(overhead_total / a.n_galaxies, 2),
                job_startup_s=30.0, queue_wait_s=a.queue_wait_s,
                note="per-fit GPU time is not measured on this machine (no GPU): give --full-fit-s / "
                     "--gpu-speedup from a GPU run; job start-up (python + torch + CUDA init) assumed 30 s; "
                     "queue wait is site-specific"),
            gpu_hours_work=round(a.paper_galaxies * full / 3600, 3),
            options=paper(a.paper_galaxies, full, overhead_total / a.n_galaxies, 30.0, a.queue_wait_s,
                          (1, 4, 8, 15, 30))))
    print(json.dumps(result, indent=2))
    if not a.out:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r["rc"] == 0 and r["n_done"] == a.n_galaxies for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
