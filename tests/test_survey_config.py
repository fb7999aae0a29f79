"""``nuker-mge survey`` without a cluster: the survey file's checks, the dry run, the jobqueue batch
scripts, and the results table and plot built from fits' summary.json files."""

import csv
import json
import math
import sys
from pathlib import Path

import pytest

from nuker_mge_plugin import survey as sv
from nuker_mge_plugin.cli import main

EXAMPLES = Path(sv.__file__).parent / "examples"
FIT = (EXAMPLES / "ngc4697_fit_quick.toml").read_text()


def _galaxy(d, name, data="obs.npz", extra=""):
    d.mkdir(parents=True, exist_ok=True)
    (d / data).write_bytes(b"")  # load_config checks only that the data file exists
    p = d / f"{name}.toml"
    p.write_text(FIT.replace('path = "ngc4697_mock_quick.npz"', f'path = "{data}"') + extra)
    return p


@pytest.fixture
def tree(tmp_path):
    for n in ("a", "b"):
        _galaxy(tmp_path / "gal", n)
    return tmp_path


def _survey(root, text):
    p = root / "survey.toml"
    p.write_text(text)
    return p


OK = '[survey]\ngalaxies = ["gal/a.toml", "gal/b.toml"]\n'


@pytest.mark.parametrize("text,needle", [
    ('[surveys]\ngalaxies = ["gal/a.toml"]\n', "surveys: unknown section (did you mean [survey]?)"),
    ("[scheduler]\n", "survey: required section is missing"),
    ('[survey]\ngalaxy = ["gal/a.toml"]\n', "survey.galaxy: unknown key (did you mean survey.galaxies?)"),
    ("[survey]\nretries = 1\n", "survey.galaxies: required key is missing"),
    ("[survey]\ngalaxies = []\n", "survey.galaxies: expects a non-empty list"),
    ('[survey]\ngalaxies = "gal/a.toml"\n', "survey.galaxies: expects a non-empty list"),
    ('[survey]\ngalaxies = ["gal/a.toml", "gal/zz.toml"]\n', "survey.galaxies[1]: expects an existing fit"),
    ('[survey]\ngalaxies = ["gal/a.toml", "other/a.toml"]\n', "survey.galaxies[1]: duplicate galaxy name 'a'"),
    ('[survey]\ngalaxies = ["gal/a.toml", "gal/bad.toml"]\n', "survey.galaxies[1] (gal/bad.toml): sampler.chans: "
                                                              "unknown key"),
    (OK + "retries = -1\n", "survey.retries: expects an integer >= 0"),
    (OK + '[scheduler]\naddress = "localhost:8786"\n', "scheduler.address: expects \"local\" or a scheduler"),
    (OK + "[scheduler]\nn_workers = 0\n", "scheduler.n_workers: expects an integer >= 1"),
    (OK + '[scheduler]\naddress = "tcp://h:8786"\nn_workers = 2\n', "scheduler.n_workers: expects address"),
    (OK + '[scheduler]\nworkers = 2\n', "scheduler.workers: unknown key (did you mean scheduler.n_workers?)"),
    (OK + '[scheduler.jobqueue]\nkind = "lsf"\ncores = 4\nmemory = "8GB"\n', "scheduler.jobqueue.kind: expects one"),
    (OK + '[scheduler.jobqueue]\nkind = "slurm"\nmemory = "8GB"\n', "scheduler.jobqueue.cores: required key"),
    (OK + '[scheduler.jobqueue]\nkind = "slurm"\ncores = 4\nmemory = "lots"\n', "scheduler.jobqueue.memory: expects"),
    (OK + '[scheduler.jobqueue]\nkind = "slurm"\ncores = 4\nmemory = "8GB"\nwalltime = "2h"\n',
     "scheduler.jobqueue.walltime: expects [D-]HH:MM:SS"),
    (OK + '[scheduler.jobqueue]\nkind = "slurm"\ncores = 2\nmemory = "8GB"\nprocesses = 4\n',
     "scheduler.jobqueue.processes: expects at most cores = 2"),
    (OK + '[scheduler.jobqueue]\nkind = "pbs"\ncores = 2\nmemory = "8GB"\nminimum_jobs = 3\nmaximum_jobs = 1\n',
     "scheduler.jobqueue.maximum_jobs: expects >= minimum_jobs = 3"),
    (OK + '[scheduler.jobqueue]\nkind = "pbs"\ncores = 2\nmemory = "8GB"\ngpu = 1\n',
     "scheduler.jobqueue.gpu: unknown key (did you mean scheduler.jobqueue.gpus?)"),
    (OK + '[scheduler]\naddress = "tcp://h:8786"\n[scheduler.jobqueue]\nkind = "pbs"\ncores = 2\nmemory = "8GB"\n',
     "scheduler.address: expects no address with [scheduler.jobqueue]"),
    ("[survey\n", "invalid TOML"),
])
def test_bad_survey_one_line_exit_2_before_anything(tree, capsys, text, needle):
    _galaxy(tree / "other", "a")
    _galaxy(tree / "gal", "bad", extra="chans = 3\n")  # a key appended to [sampler]
    out = tree / "out"
    rc = main(["survey", str(_survey(tree, text)), "--out", str(out)])
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("nuker-mge: error: "), cap
    assert needle in err[0], err[0]
    assert cap.out == "" and not out.exists()


def test_missing_survey_file(tmp_path, capsys):
    assert main(["survey", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "survey file not found" in capsys.readouterr().err


def test_galaxy_paths_relative_to_survey_file_and_states(tree, monkeypatch):
    monkeypatch.chdir(tree / "gal")  # not the survey file's folder
    s = sv.load_survey(_survey(tree, OK), tree / "out")
    assert [g.name for g in s.galaxies] == ["a", "b"]
    assert s.galaxies[0].config == str((tree / "gal" / "a.toml").resolve())
    assert s.galaxies[1].out_dir == str((tree / "out" / "b").resolve())
    assert s.retries == 2 and s.scheduler.kind == "local" and set(s.fit_configs) == {"a", "b"}
    assert [sv.galaxy_state(g) for g in s.galaxies] == ["new", "new"]
    (tree / "out" / "a").mkdir(parents=True)
    (tree / "out" / "a" / "map.json").write_text("{}")
    assert sv.galaxy_state(s.galaxies[0]) == "resume"
    (tree / "out" / "a" / "summary.json").write_text("{}")
    assert sv.galaxy_state(s.galaxies[0]) == "done"


def test_local_size(tree):
    s = sv.load_survey(_survey(tree, OK), tree / "out")
    n, t = sv.local_size(s, 1)
    assert n == 1 and t == sv._cpu_count()
    n, t = sv.local_size(s, 100)
    assert n == sv._cpu_count() and t == 1
    s = sv.load_survey(_survey(tree, OK + "[scheduler]\nn_workers = 3\ntorch_threads = 2\n"), tree / "out")
    assert sv.local_size(s, 1) == (3, 2)


def test_dry_run_local_prints_plan_and_starts_nothing(tree, capsys):
    pytest.importorskip("distributed")
    (tree / "out" / "b").mkdir(parents=True)
    (tree / "out" / "b" / "summary.json").write_text("{}")
    rc = main(["survey", str(_survey(tree, OK)), "--out", str(tree / "out"), "--dry-run"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "2 galaxies, scheduler: local" in text and "  a: new (" in text and "  b: done (" in text
    assert "LocalCluster: 1 worker process(es)" in text
    assert sorted(p.name for p in (tree / "out").iterdir()) == ["b"]  # nothing written


JQ = '[scheduler.jobqueue]\nkind = "{kind}"\ncores = 8\nmemory = "32GB"\nwalltime = "04:00:00"\ngpus = 2\n' \
     'queue = "gpu"\naccount = "wisdom"\njob_extra_directives = ["{extra}"]\n' \
     'job_script_prologue = ["module load cuda", "source /opt/venv/bin/activate"]\nmaximum_jobs = 4\n'


def _script(tree, capsys, kind, extra):
    pytest.importorskip("dask_jobqueue")
    rc = main(["survey", str(_survey(tree, OK + JQ.format(kind=kind, extra=extra))), "--out", str(tree / "out"),
               "--dry-run"])
    text = capsys.readouterr().out
    assert rc == 0 and f"batch script of each {kind.upper()} job (not submitted):" in text
    assert not (tree / "out").exists()
    lines = text.splitlines()
    assert "module load cuda" in lines and "source /opt/venv/bin/activate" in lines
    worker = [ln for ln in lines if "distributed.cli.dask_worker" in ln]
    assert len(worker) == 1 and f"--resources {sv.FIT_RESOURCE}=1" in worker[0] and "--nthreads 8" in worker[0]
    assert lines.index("module load cuda") < lines.index(worker[0])
    return lines


def test_dry_run_slurm_script(tree, capsys):
    lines = _script(tree, capsys, "slurm", "--constraint=a100")
    for d in ("#SBATCH -p gpu", "#SBATCH -A wisdom", "#SBATCH --cpus-per-task=8", "#SBATCH -t 04:00:00",
              "#SBATCH --constraint=a100", "#SBATCH --gres=gpu:2"):
        assert d in lines, d
    assert any(ln.startswith("#SBATCH --mem=") for ln in lines)


def test_dry_run_pbs_script(tree, capsys):
    lines = _script(tree, capsys, "pbs", "-m abe")
    for d in ("#PBS -q gpu", "#PBS -A wisdom", "#PBS -l select=1:ncpus=8:ngpus=2:mem=32gb",
              "#PBS -l walltime=04:00:00", "#PBS -m abe"):
        assert d in lines, d


def test_dry_run_sge_script(tree, capsys):
    lines = _script(tree, capsys, "sge", "-pe smp 8")
    for d in ("#$ -q gpu", "#$ -P wisdom", "#$ -l h_rt=04:00:00", "#$ -pe smp 8", "#$ -l gpu=2"):
        assert d in lines, d


def test_pbs_memory_units():
    assert sv._pbs_mem("16GB") == "16gb" and sv._pbs_mem("4GiB") == "4gb" and sv._pbs_mem("1.5GB") == "1536mb"


def test_without_dask_one_line_hint(tree, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    rc = main(["survey", str(_survey(tree, OK)), "--out", str(tree / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pip install 'nuker-mge-plugin[survey]'" in err[0]


# ----------------------------------------------------------------------------- results from summaries
def _summary(d, params, truth=None, wall=12.5, warnings=(), converged=True, max_r_hat=1.005, fit_warnings=None):
    """A summary.json; ``fit_warnings`` (all the fit's warnings) is left out as in summaries before it existed."""
    d.mkdir(parents=True, exist_ok=True)
    s = dict(parameters={n: dict(mean=m, std=0.1, median=m + 0.01, hdi_68=[m - 0.1, m + 0.1], r_hat=1.01,
                                 ess_bulk=400.0) for n, m in params.items()},
             wall_time_s=wall, map=dict(warnings=list(warnings)),
             diagnostics=dict(converged=converged, max_r_hat=max_r_hat))
    if fit_warnings is not None:
        s["warnings"] = list(fit_warnings)
    if truth is not None:
        s["truth"] = {"log10_mbh": {"value": truth}}
    (d / "summary.json").write_text(json.dumps(s))


def test_results_table_and_plot(tree):
    pytest.importorskip("astropy")
    from astropy.table import Table
    out = tree / "out"
    _galaxy(tree / "gal", "c")
    s = sv.load_survey(_survey(tree, '[survey]\ngalaxies = ["gal/a.toml", "gal/b.toml", "gal/c.toml"]\n'), out)
    _summary(out / "a", {"log10_mbh": 8.1, "pa": 246.0}, truth=8.11)
    _summary(out / "b", {"log10_mbh": 7.5, "pa": 120.0, "flux": 10.0}, wall=20.0,
             warnings=["warning: the cube's sub-pixel sampling biases this fit"], converged=False, max_r_hat=1.3,
             fit_warnings=["warning: the cube's sub-pixel sampling biases this fit", "warning: two"])
    outcomes = dict(a=dict(status="done", worker="tcp://w1", wall_time_s=None),
                    b=dict(status="done", worker="tcp://w2", wall_time_s=33.0),
                    c=dict(status="failed", worker="tcp://w1", error="ValueError: bad data"))
    rows, cols = sv.results_rows(s.galaxies, outcomes)
    assert cols[:4] == ["galaxy", "status", "converged", "max_r_hat"]
    assert cols[4:16] == [f"{n}_{k}" for n in ("log10_mbh", "pa", "flux") for k in ("mean", "std", "r_hat",
                                                                                    "ess_bulk")]
    assert cols[16:19] == ["wall_time_s", "worker", "error"]
    assert [r["converged"] for r in rows] == [True, False, ""]  # empty: no finished fit
    csv_path, ecsv_path = sv.write_results_table(out, rows, cols)
    with open(csv_path) as f:
        got = list(csv.DictReader(f))
    assert [r["galaxy"] for r in got] == ["a", "b", "c"] and [r["status"] for r in got] == ["done", "done", "failed"]
    assert float(got[0]["log10_mbh_mean"]) == 8.1 and float(got[0]["wall_time_s"]) == 12.5  # from summary.json
    assert float(got[1]["wall_time_s"]) == 33.0 and got[1]["worker"] == "tcp://w2"
    assert math.isnan(float(got[0]["flux_mean"])) and float(got[1]["flux_ess_bulk"]) == 400.0
    assert got[2]["error"] == "ValueError: bad data" and math.isnan(float(got[2]["log10_mbh_mean"]))
    assert [r["converged"] for r in got] == ["True", "False", ""]
    assert float(got[0]["max_r_hat"]) == 1.005 and float(got[1]["max_r_hat"]) == 1.3
    assert math.isnan(float(got[2]["max_r_hat"]))
    assert float(got[0]["log10_mbh_truth"]) == 8.11 and math.isnan(float(got[1]["log10_mbh_truth"]))
    assert cols[-1] == "warnings" and got[0]["warnings"] == "" and got[2]["warnings"] == ""
    assert got[1]["warnings"] == "warning: the cube's sub-pixel sampling biases this fit | warning: two"
    t = Table.read(ecsv_path, format="ascii.ecsv")
    assert t.colnames == cols and len(t) == 3 and t["pa_mean"][1] == 120.0 and t["status"][2] == "failed"
    assert list(t["converged"].filled("")) == ["True", "False", ""] and t["max_r_hat"][1] == 1.3
    png = sv.plot_survey(out / "survey_mbh.png", rows)
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Path(png).stat().st_size > 5000


@pytest.mark.parametrize("example", ["survey_local.toml", "survey_slurm.toml"])
def test_shipped_example_surveys(tmp_path, capsys, example):
    pytest.importorskip("dask_jobqueue")
    for name in (example, "ngc4697_fit_quick.toml"):
        (tmp_path / name).write_text((EXAMPLES / name).read_text())
    (tmp_path / "ngc4697_mock_quick.npz").write_bytes(b"")
    s = sv.load_survey(tmp_path / example, tmp_path / "out")
    assert [g.name for g in s.galaxies] == ["ngc4697_fit_quick"] and s.retries == 2
    assert main(["survey", str(tmp_path / example), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "ngc4697_fit_quick: new" in text
    if "slurm" in example:
        assert "#SBATCH --gres=gpu:1" in text and "#SBATCH -t 04:00:00" in text
