"""``nuker-mge survey`` on a real dask.distributed LocalCluster, with the quick fits (~10 s each):
results, a failing galaxy, rerun/resume, and a worker killed in the middle of a fit."""

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")
pytest.importorskip("xarray")  # the fits write posterior.nc (the inference extra)

from nuker_mge_plugin import survey as sv  # noqa: E402
from nuker_mge_plugin.cli import main  # noqa: E402

EXAMPLES = Path(sv.__file__).parent / "examples"


def _fit_config(d, name, data, *, replace=()):
    text = (EXAMPLES / "ngc4697_fit_quick.toml").read_text().replace('"ngc4697_mock_quick.npz"', f'"{data}"')
    for a, b in replace:
        assert a in text, a
        text = text.replace(a, b)
    p = d / f"{name}.toml"
    p.write_text(text)
    return f"{d.name}/{p.name}"


def _rows(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def _attempts(d):
    return [json.loads(ln) for ln in (d / "attempts.jsonl").read_text().splitlines()]


def test_local_survey_failure_and_rerun(mock_dir, tmp_path, capsys):
    cfgs = tmp_path / "cfg"
    cfgs.mkdir()
    (cfgs / "broken.npz").write_bytes(b"not an observation")
    names = [_fit_config(cfgs, "gal_a", mock_dir / "obs.npz"), _fit_config(cfgs, "gal_b", mock_dir / "obs.npz"),
             _fit_config(cfgs, "gal_bad", "broken.npz")]
    survey = tmp_path / "survey.toml"
    survey.write_text(f'[survey]\ngalaxies = {json.dumps(names)}\nretries = 1\n'
                      '[scheduler]\naddress = "local"\nn_workers = 2\ndashboard_address = ":0"\n')
    out = tmp_path / "out"
    rc = main(["survey", str(survey), "--out", str(out)])
    cap = capsys.readouterr()
    text = cap.out
    assert rc == 1, cap.err  # a galaxy failed, the others did not stop
    assert "LocalCluster: 2 worker process(es)" in text and "dashboard: http://" in text
    assert "galaxies: 0 done, 0 running, 0 failed of 3" in text
    assert "galaxies: 2 done, 0 running, 1 failed of 3" in text
    assert "galaxy gal_bad: attempt 1 failed on tcp://" in text  # retried once by Dask ...
    assert "galaxy gal_bad failed: ValueError:" in text and "not a readable .npz" in text  # ... then reported
    rows = _rows(out)
    assert [r["galaxy"] for r in rows] == ["gal_a", "gal_b", "gal_bad"]
    assert [r["status"] for r in rows] == ["done", "done", "failed"]
    free = json.loads((out / "gal_a" / "summary.json").read_text())["parameters"]
    assert list(rows[0])[:2] == ["galaxy", "status"]
    for n in free:
        for k in ("mean", "std", "r_hat", "ess_bulk"):
            assert float(rows[0][f"{n}_{k}"]) == pytest.approx(free[n][k]), (n, k)
    assert rows[0]["worker"].startswith("tcp://") and float(rows[0]["wall_time_s"]) > 0
    assert "not a readable .npz" in rows[2]["error"] and rows[2]["log10_mbh_mean"] == "nan"
    # the quick fits' 20 draws are not converged, and the table says so; a failed fit has no verdict
    summ = json.loads((out / "gal_a" / "summary.json").read_text())
    assert [r["converged"] for r in rows] == ["False", "False", ""] and not summ["diagnostics"]["converged"]
    assert float(rows[0]["max_r_hat"]) == pytest.approx(summ["diagnostics"]["max_r_hat"])
    assert "NOT converged" in rows[0]["warnings"] and rows[2]["max_r_hat"] == "nan"
    assert "galaxies fitted (warning: 2 not converged: see the converged column)" in text
    assert float(rows[0]["log10_mbh_truth"]) == 8.11
    from astropy.table import Table
    t = Table.read(out / "results.ecsv", format="ascii.ecsv")
    assert list(t["galaxy"]) == ["gal_a", "gal_b", "gal_bad"] and t["log10_mbh_mean"][1] == pytest.approx(
        float(rows[1]["log10_mbh_mean"]))
    assert (out / "survey_mbh.png").read_bytes()[:4] == b"\x89PNG"
    assert [a["event"] for a in _attempts(out / "gal_bad")] == ["start", "error", "start", "error"]
    assert "Traceback" in (out / "gal_bad" / "fit.log").read_text()
    b_attempts = _attempts(out / "gal_b")
    assert [a["event"] for a in b_attempts] == ["start", "done"]

    # an interrupted galaxy: its chains are checkpointed but summary.json was never written
    (out / "gal_a" / "summary.json").unlink()
    rc = main(["survey", str(survey), "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 1
    assert "3 galaxies, 1 already finished, 1 to resume, 1 new" in text
    assert "galaxies:" not in text  # --no-progress
    assert _attempts(out / "gal_b") == b_attempts  # finished: skipped, not run again
    a = _attempts(out / "gal_a")
    assert [x["event"] for x in a] == ["start", "done", "start", "done"] and a[2]["resumed"] is True
    log = (out / "gal_a" / "fit.log").read_text()
    assert "MAP (read back)" in log and (out / "gal_a" / "summary.json").exists()
    rows2 = _rows(out)
    assert [r["status"] for r in rows2] == ["done", "done", "failed"] and len(rows2) == 3
    assert rows2[1] == rows[1]  # the skipped galaxy's row is unchanged
    assert rows2[0]["log10_mbh_mean"] == rows[0]["log10_mbh_mean"]  # the finished chains, read back


def test_worker_killed_mid_fit_is_retried_from_checkpoint(mock_dir, tmp_path):
    """SIGKILL the worker process once the first MALA checkpoint exists: Dask reschedules the task on
    the restarted worker, which resumes from the checkpoint; one row, no duplicated draws."""
    from distributed import Client, LocalCluster

    cfgs = tmp_path / "cfg"
    cfgs.mkdir()
    longer = [("draws = 20", "draws = 150"),
              ("checkpoint_every = 10", "checkpoint_every = 10\n[output]\nfigures = false")]
    name = _fit_config(cfgs, "killed", mock_dir / "obs.npz", replace=longer)
    survey = tmp_path / "survey.toml"
    survey.write_text(f'[survey]\ngalaxies = ["{name}"]\nretries = 2\n')
    out = tmp_path / "out"
    s = sv.load_survey(survey, out)
    gdir = out / "killed"
    killed = {}

    def killer():
        t_end = time.monotonic() + 240
        while time.monotonic() < t_end:
            if (gdir / "chains" / "state.pt").exists() and (gdir / "attempts.jsonl").exists():
                pid = _attempts(gdir)[0]["pid"]
                killed.update(pid=pid, summary_existed=(gdir / "summary.json").exists())
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster) as client:
        res = sv.run_survey(s, out, progress=False, client=client)
    th.join(5)
    assert killed and not killed["summary_existed"], killed
    assert res["n_done"] == 1 and res["n_failed"] == 0
    rows = _rows(out)
    assert len(rows) == 1 and rows[0]["status"] == "done"
    att = _attempts(gdir)
    starts = [a for a in att if a["event"] == "start"]
    assert [a["event"] for a in att] == ["start", "start", "done"]  # the killed attempt never ended
    assert starts[0]["pid"] == killed["pid"] != starts[1]["pid"] and starts[1]["resumed"] is True
    assert "MAP (read back)" in (gdir / "fit.log").read_text()
    summ = json.loads((gdir / "summary.json").read_text())
    assert summ["chains"] == 2 and summ["draws"] == 150
    from nuker_mge_plugin.inference.results import read_posterior_netcdf
    draws, _, _ = read_posterior_netcdf(gdir / "posterior.nc")
    assert draws["log10_mbh"].shape == (2, 150)
