"""``nuker-mge survey``: fit many galaxies, one Dask task each, with resume and a results table.

A survey file names ``nuker-mge fit`` configurations (paths relative to the survey file) and a
Dask scheduler::

    [survey]
    galaxies = ["ngc4697.toml", "ngc4429.toml", "mock_07.toml"]
    retries = 2                  # Dask retries of a task whose fit raised or whose worker died

    [scheduler]
    address = "local"            # an embedded LocalCluster sized to this machine (default),
                                 # or "tcp://host:8786": an existing Dask scheduler
    # n_workers = 2              # local only: worker processes (default: one per core, at most
                                 # one per galaxy)
    # [scheduler.jobqueue]       # a dask-jobqueue cluster (SLURM, PBS, SGE): see JOBQUEUE_KEYS

Each galaxy ``NAME`` (its configuration's file stem) is fitted by :func:`fit_galaxy` on a worker
into ``OUT/NAME/`` (the fit's own directory: checkpoints under ``chains/``, ``summary.json`` ...),
all its chains batched on the worker's device. Only paths travel to the workers, which need this
package installed and the files on a shared file system.

Resume: a galaxy with ``OUT/NAME/summary.json`` is finished and skipped; any other runs with
``run_fit(..., resume=True)``, which continues from the checkpoints there (or starts afresh when
there are none). A worker that dies mid-fit has its task rescheduled by Dask (up to ``retries``
times: the scheduler's ``allowed-failures`` for the embedded clusters), and the new attempt
resumes from the last checkpoint. ``OUT/NAME/attempts.jsonl`` records every attempt (worker, pid,
start, end) and ``OUT/NAME/fit.log`` the fit's log.

Results: ``OUT/results.csv`` and ``OUT/results.ecsv`` (one row per galaxy: ``galaxy``, ``status``,
``converged`` (True when every free parameter has R-hat <= 1.01 and bulk and tail ESS >= 400,
False when not, empty without a finished fit), ``max_r_hat``, ``<param>_mean``, ``<param>_std``,
``<param>_r_hat``, ``<param>_ess_bulk`` for every free parameter, ``wall_time_s``, ``worker``,
``error``, then ``log10_mbh_median``, ``log10_mbh_hdi68_low``, ``log10_mbh_hdi68_high``,
``log10_mbh_truth``, ``warnings``) and ``OUT/survey_mbh.png`` (log10 M_BH with its 68% HDI per
galaxy, against the truth for mocks). Rows with ``converged`` False must not be quoted.

Dask (``distributed``, ``dask-jobqueue``) is the optional ``survey`` extra:
``pip install 'nuker-mge-plugin[survey]'``.

Its length (~780 lines) is the survey file's declarations, the cluster set-up for three batch
systems, the per-galaxy task with its resume and attempts log, and the results table.
"""

import csv
import hashlib
import json
import logging
import math
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ._files import atomic_write
from ._warnings import silence_fit_warnings
from .pipeline.config import ConfigError, load_config
from .pipeline.rundir import RunDir
from .schema import Section, document, key, keys_of, read_section, read_toml, section_keys, suggest

__all__ = ["SurveyConfig", "SurveyGalaxy", "SchedulerConfig", "JobqueueConfig", "load_survey", "fit_galaxy",
           "galaxy_state", "make_cluster", "job_script", "run_survey", "results_rows", "write_results_table",
           "plot_survey", "SurveyError"]

#: Dask resource every fit task claims on a jobqueue worker: one fit per worker process at a time,
#: with all of the process's cores for torch.
FIT_RESOURCE = "nuker_mge_fit"
#: The structured-event topic workers report fit starts on (the progress line's "running").
EVENT_TOPIC = "nuker-mge-survey"

_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc|ws|wss)://[^\s/]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class SurveyError(ConfigError):
    """A bad survey file: one line naming the key (``section.key``) and what it expects."""


@dataclass(frozen=True)
class SurveyGalaxy:
    """One galaxy: ``name`` (the configuration's stem), its fit ``config`` path (absolute) and ``out_dir``."""

    name: str
    config: str
    out_dir: str


@dataclass(frozen=True)
class SurveyTable:
    galaxies: tuple = key(kind="custom", what="a non-empty list of fit configuration paths", doc="""
        The galaxies' fit configuration files (relative to the survey file); each galaxy's output
        folder is named after its file's stem.""")
    retries: int = key(2, kind="integer", ge=0, doc="How many times a failed fit is tried again.")


@dataclass(frozen=True)
class JobqueueConfig:
    kind: str = key(kind="choice", choices=("slurm", "pbs", "sge"), doc="The batch system.")
    cores: int = key(kind="integer", ge=1, doc="""
        Cores per job (split between its processes; each process fits one galaxy at a time with
        ``cores / processes`` torch threads).""")
    memory: str = key(kind="string", nonempty=True, what='a size like "16GB" or "4GiB"', doc="Memory per job.")
    walltime: str | None = key(None, kind="string", nonempty=True, what="[D-]HH:MM:SS", doc="Wall time per job.")
    processes: int = key(1, kind="integer", ge=1, doc="Worker processes (= galaxies fitted at once) per job.")
    gpus: int = key(0, kind="integer", ge=0, doc="""
        GPUs per job: ``--gres=gpu:N`` on SLURM, ``ngpus=N`` in the PBS ``select`` resource,
        ``-l gpu=N`` on SGE. The galaxies' ``[sampler] device`` must then be "cuda".""")
    queue: str | None = key(None, kind="string", nonempty=True, doc="Partition or queue.")
    account: str | None = key(None, kind="string", nonempty=True, doc="Account or project.")
    job_extra_directives: tuple = key((), kind="strings", doc="""
        More scheduler directives, verbatim (e.g. ``["--constraint=a100"]``).""")
    job_script_prologue: tuple = key((), kind="strings", doc="""
        Shell lines run before the worker starts (``module load ...``, ``source venv/bin/activate``).""")
    local_directory: str | None = key(None, kind="string", nonempty=True, doc="dask-jobqueue's option of that name.")
    log_directory: str | None = key(None, kind="string", nonempty=True, doc="dask-jobqueue's option of that name.")
    interface: str | None = key(None, kind="string", nonempty=True, doc="dask-jobqueue's option of that name.")
    python: str | None = key(None, kind="string", nonempty=True, doc="dask-jobqueue's option of that name.")
    minimum_jobs: int = key(0, kind="integer", ge=0, doc="Adaptive scaling: the fewest jobs.")
    maximum_jobs: int | None = key(None, kind="integer", ge=1, default_text="enough for every unfinished galaxy",
                                   doc="Adaptive scaling: the most jobs, >= minimum_jobs.")


@dataclass(frozen=True)
class SchedulerConfig:
    address: str = key("local", kind="string", nonempty=True, what='"local" or an address like "tcp://host:8786"',
                       doc="""
        "local": a cluster on this machine; or the address of a running dask scheduler.""")
    n_workers: int | None = key(None, kind="integer", ge=1, default_text="the CPU cores", doc="""
        Local cluster only: worker processes (= galaxies fitted at once).""")
    torch_threads: int | None = key(None, kind="integer", ge=1, default_text="the cores per worker", doc="""
        torch threads per fit.""")
    dashboard_address: str = key(":8787", kind="string", nonempty=True, doc="""
        Where an embedded cluster (local or jobqueue) serves the dask dashboard.""")
    jobqueue: JobqueueConfig | None = key(None, kind="custom", what="a [scheduler.jobqueue] table", doc="""
        A dask-jobqueue cluster (SLURM, PBS, SGE): the ``[scheduler.jobqueue]`` table below.""")

    @property
    def kind(self):
        return "jobqueue" if self.jobqueue is not None else ("local" if self.address == "local" else "remote")


#: The sections of a survey file: ``(name, dataclass, what it is)``.
SECTIONS = (("survey", SurveyTable, "The galaxies of the survey."),
            ("scheduler", SchedulerConfig, 'Where the fits run: address = "local" (default), a scheduler '
                                           "address, or a jobqueue cluster."),
            ("scheduler.jobqueue", JobqueueConfig, "A dask-jobqueue cluster; every job runs processes worker "
                                                   "processes."))
for _name, _cls, _intro in SECTIONS:
    document(_cls, f"``[{_name}]``: {_intro[0].lower()}{_intro[1:]}")
#: Keys of ``[survey]``, ``[scheduler]`` (``jobqueue`` is the sub-table) and ``[scheduler.jobqueue]``.
SURVEY_KEYS, SCHEDULER_KEYS, JOBQUEUE_KEYS = (section_keys(c) for _, c, _ in SECTIONS)
JOBQUEUE_KINDS = keys_of(JobqueueConfig)["kind"][1].choices


@dataclass(frozen=True)
class SurveyConfig:
    """The validated survey: its galaxies (their fit configurations already loaded and checked)."""

    source: str
    galaxies: tuple
    scheduler: SchedulerConfig
    retries: int = 2
    fit_configs: dict = field(default_factory=dict, compare=False, repr=False)


# ----------------------------------------------------------------------------- the survey file
def _table(name, raw, cls):
    if not isinstance(raw, dict):
        raise SurveyError(f"{name}: expects a [{name}] table, got {raw!r}")
    return Section(name, raw, section_keys(cls), SurveyError)


def _jobqueue(raw, n_galaxies):
    sec = "scheduler.jobqueue"
    s = _table(sec, raw, JobqueueConfig)
    for k in ("kind", "cores", "memory"):
        if k not in raw:
            raise SurveyError(f"{sec}.{k}: required key is missing")
    v = read_section(JobqueueConfig, s)
    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*[KMGTP]i?B\s*", v["memory"], re.IGNORECASE):
        raise SurveyError(f"{sec}.memory: expects a size like \"16GB\" or \"4GiB\", got {v['memory']!r}")
    if v["walltime"] is not None and not re.fullmatch(r"(\d+-)?\d+(:\d\d){0,2}", v["walltime"]):
        raise SurveyError(f"{sec}.walltime: expects [D-]HH:MM:SS, got {v['walltime']!r}")
    if v["processes"] > v["cores"]:
        raise SurveyError(f"{sec}.processes: expects at most cores = {v['cores']} worker processes per job, "
                          f"got {v['processes']}")
    if v["maximum_jobs"] is not None and v["maximum_jobs"] < v["minimum_jobs"]:
        raise SurveyError(f"{sec}.maximum_jobs: expects >= minimum_jobs = {v['minimum_jobs']}, "
                          f"got {v['maximum_jobs']}")
    return JobqueueConfig(**{**v, "memory": v["memory"].strip()})


def _scheduler(raw, n_galaxies):
    s = _table("scheduler", raw, SchedulerConfig)
    v = read_section(SchedulerConfig, s)
    address = v["address"]
    if address != "local" and not _ADDRESS.match(address):
        raise SurveyError(f"scheduler.address: expects \"local\" or a scheduler address like "
                          f"\"tcp://host:8786\", got {address!r}")
    jq = raw.get("jobqueue")
    if jq is not None and "address" in raw and address != "local":
        raise SurveyError("scheduler.address: expects no address with [scheduler.jobqueue] (its scheduler runs "
                          f"in this process), got {address!r}")
    if v["n_workers"] is not None and (jq is not None or address != "local"):
        raise SurveyError("scheduler.n_workers: expects address = \"local\" (a jobqueue cluster scales by "
                          "minimum_jobs/maximum_jobs; a remote scheduler has its own workers)")
    if "dashboard_address" in raw and address != "local" and jq is None:
        raise SurveyError("scheduler.dashboard_address: expects an embedded cluster (address = \"local\" or "
                          "[scheduler.jobqueue]); a remote scheduler serves its own dashboard")
    return SchedulerConfig(**v, jobqueue=_jobqueue(jq, n_galaxies) if jq is not None else None)


def load_survey(path, out_dir, *, check_fits=True):
    """Read and validate a survey file; ``out_dir`` is the survey's results directory.

    Every galaxy configuration is loaded with :func:`~nuker_mge_plugin.pipeline.config.load_config`
    (``check_fits``), so a bad one fails here, before any cluster starts. Raises
    :class:`SurveyError` (a ``ConfigError``, one line) on any problem.
    """
    p = Path(path)
    raw = read_toml(p, "survey", SurveyError)
    for sec in raw:
        if sec not in ("survey", "scheduler"):
            s = suggest(sec, ("survey", "scheduler"))
            raise SurveyError(f"{sec}: unknown section" + (f" (did you mean [{s}]?)" if s else
                                                           " (valid: [survey], [scheduler])"))
    if "survey" not in raw:
        raise SurveyError("survey: required section is missing ([survey] galaxies = [...])")
    sv = raw["survey"]
    table = _table("survey", sv, SurveyTable)
    gal = sv.get("galaxies")
    if gal is None:
        raise SurveyError("survey.galaxies: required key is missing")
    if not isinstance(gal, list) or not gal or not all(isinstance(g, str) and g.strip() for g in gal):
        raise SurveyError(f"survey.galaxies: expects a non-empty list of fit configuration paths, got {gal!r}")
    retries = read_section(SurveyTable, table)["retries"]
    base = p.resolve().parent
    out = Path(out_dir).expanduser().resolve()
    galaxies, seen, cfgs = [], {}, {}
    for i, g in enumerate(gal):
        q = Path(g).expanduser()
        q = (q if q.is_absolute() else base / q).resolve()
        key = f"survey.galaxies[{i}]"
        if not q.is_file():
            raise SurveyError(f"{key}: expects an existing fit configuration file, got {g!r} ({q} not found)")
        name = q.stem
        if not _NAME.match(name):
            raise SurveyError(f"{key}: expects a file name usable as a directory name (letters, digits, . _ + -), "
                              f"got {name!r}")
        if name in seen:
            raise SurveyError(f"{key}: duplicate galaxy name {name!r} (also survey.galaxies[{seen[name]}]): "
                              "each galaxy's output directory is named after its configuration's stem")
        seen[name] = i
        if check_fits:
            try:
                cfgs[name] = load_config(q)
            except ConfigError as e:
                raise SurveyError(f"{key} ({g}): {e}") from None
        galaxies.append(SurveyGalaxy(name=name, config=str(q), out_dir=str(out / name)))
    sched = _scheduler(raw.get("scheduler", {}), len(galaxies))
    return SurveyConfig(source=str(p.resolve()), galaxies=tuple(galaxies), scheduler=sched, retries=retries,
                        fit_configs=cfgs)


def galaxy_state(galaxy):
    """``"done"`` (``summary.json`` exists), ``"resume"`` (a checkpoint or MAP exists) or ``"new"``."""
    return RunDir(galaxy.out_dir).state()


# ----------------------------------------------------------------------------- the task on a worker
def _append_jsonl(path, obj):
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_attempts(out_dir):
    """The records of ``OUT/NAME/attempts.jsonl`` (a list of dicts; empty if none)."""
    p = RunDir(out_dir).attempts_jsonl
    if not p.is_file():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a killed worker
            continue
    return out


def _worker_info():
    """(worker address or 'local', its nthreads, whether it carries the fit resource)."""
    try:
        from distributed import get_worker
        w = get_worker()
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}", 1, False
    return w.address, w.state.nthreads, FIT_RESOURCE in (w.state.total_resources or {})


def _emit(name, event, **info):
    try:
        from distributed import get_worker
        get_worker().log_event(EVENT_TOPIC, dict(galaxy=name, event=event, **info))
    except (ImportError, ValueError):
        pass


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _local_dask():
    try:
        import dask
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return dask.config.set(scheduler="synchronous")


def fit_galaxy(name, config_path, out_dir, torch_threads=None):
    """Run (or finish) one galaxy's fit in ``out_dir``; the task each galaxy is on a worker.

    Idempotent: returns at once for a finished fit (``summary.json``), otherwise runs
    ``run_fit(..., resume=True)``, which continues from the checkpoints. torch uses
    ``torch_threads`` threads (None: the worker's threads on a jobqueue worker, else this
    machine's cores over the worker's threads); the fit's own ``[sampler] threads`` wins.
    Returns ``dict(galaxy, worker, wall_time_s, resumed, attempt)``.
    """
    import torch

    from .pipeline.fit import run_fit

    out = Path(out_dir)
    run = RunDir(out)
    out.mkdir(parents=True, exist_ok=True)
    worker, nthreads, has_res = _worker_info()
    if run.state() == "done":
        done = [a for a in read_attempts(out) if a.get("event") == "done"]
        return dict(galaxy=name, worker=done[-1]["worker"] if done else worker, wall_time_s=None, resumed=False,
                    attempt=len(done), skipped=True)
    attempt = sum(1 for a in read_attempts(out) if a.get("event") == "start") + 1
    resumed = run.started
    if torch_threads is None:
        torch_threads = nthreads if has_res else max(1, _cpu_count() // max(1, nthreads))
    torch.set_num_threads(int(torch_threads))
    _append_jsonl(run.attempts_jsonl, dict(event="start", attempt=attempt, worker=worker,
                                               host=socket.gethostname(), pid=os.getpid(), time=time.time(),
                                               resumed=resumed, torch_threads=int(torch_threads)))
    _emit(name, "start", attempt=attempt, resumed=resumed, worker=worker)
    t0 = time.perf_counter()
    with open(run.fit_log, "a") as logf:
        def log(msg):
            logf.write(f"{msg}\n")
            logf.flush()
        log(f"--- attempt {attempt} on {worker} (pid {os.getpid()}){', resuming' if resumed else ''}")
        try:
            cfg = load_config(config_path)
            # any dask computation inside the fit (xarray, arviz) stays in this thread: on a worker
            # dask's default would send it back to the cluster, whose threads the fits occupy
            silence_fit_warnings()  # the fit's warning lines are in its log and in results.csv
            with _local_dask():
                run_fit(cfg, out, resume=True, progress=False, log=log)
        except BaseException as e:
            import traceback
            wall = time.perf_counter() - t0
            log("".join(traceback.format_exception(e)).rstrip())
            _append_jsonl(run.attempts_jsonl, dict(event="error", attempt=attempt, worker=worker,
                                                       pid=os.getpid(), time=time.time(), wall_time_s=wall,
                                                       error=f"{type(e).__name__}: {e}"))
            _emit(name, "error", attempt=attempt, worker=worker, error=_error_text(e))
            raise
    wall = time.perf_counter() - t0
    _append_jsonl(run.attempts_jsonl, dict(event="done", attempt=attempt, worker=worker, pid=os.getpid(),
                                               time=time.time(), wall_time_s=wall))
    return dict(galaxy=name, worker=worker, wall_time_s=wall, resumed=resumed, attempt=attempt, skipped=False)


# ----------------------------------------------------------------------------- clusters
def _jobqueue_kwargs(jq, *, dashboard_address=":8787"):
    kw = dict(cores=jq.cores, memory=jq.memory, processes=jq.processes,
              job_extra_directives=list(jq.job_extra_directives),
              job_script_prologue=list(jq.job_script_prologue),
              worker_extra_args=["--resources", f"{FIT_RESOURCE}=1"],
              scheduler_options={"dashboard_address": dashboard_address})
    for k in ("walltime", "queue", "account", "local_directory", "log_directory", "interface", "python"):
        v = getattr(jq, k)
        if v is not None:
            kw["project" if (k == "account" and jq.kind == "sge") else k] = v  # SGE: -P project
    if jq.gpus:
        if jq.kind == "slurm":
            kw["job_extra_directives"].append(f"--gres=gpu:{jq.gpus}")
        elif jq.kind == "pbs":
            mem = _pbs_mem(jq.memory)
            kw["resource_spec"] = f"select=1:ncpus={jq.cores}:ngpus={jq.gpus}:mem={mem}"
        else:  # sge: the GPU resource name is site-specific; "gpu" is the common one
            kw["job_extra_directives"].append(f"-l gpu={jq.gpus}")
    return kw


def _pbs_mem(memory):
    """"16GB" / "16GiB" -> "16gb" (PBS's units: an integer with kb, mb, gb, tb; fractions -> mb)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP])i?B\s*", memory, re.IGNORECASE)
    num, unit = float(m.group(1)), m.group(2).lower()
    if num.is_integer():
        return f"{int(num)}{unit}b"
    scale = {"k": 2**-10, "m": 1, "g": 2**10, "t": 2**20, "p": 2**30}[unit]
    return f"{max(1, int(num * scale))}mb"


def _jobqueue_cluster(jq, dashboard_address):
    import dask_jobqueue
    cls = dict(slurm=dask_jobqueue.SLURMCluster, pbs=dask_jobqueue.PBSCluster, sge=dask_jobqueue.SGECluster)[jq.kind]
    return cls(**_jobqueue_kwargs(jq, dashboard_address=dashboard_address))


def job_script(survey):
    """The batch script a ``[scheduler.jobqueue]`` survey submits for each job (nothing is submitted)."""
    jq = survey.scheduler.jobqueue
    if jq is None:
        raise SurveyError("--dry-run's job script needs a [scheduler.jobqueue] table")
    import dask
    with dask.config.set({"distributed.scheduler.allowed-failures": survey.retries}):
        cluster = _jobqueue_cluster(jq, ":0")
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def local_size(survey, n_todo):
    """``(n_workers, torch threads per fit)`` of the embedded LocalCluster for ``n_todo`` galaxies."""
    s = survey.scheduler
    ncpu = _cpu_count()
    n = s.n_workers if s.n_workers is not None else max(1, min(ncpu, n_todo))
    threads = s.torch_threads if s.torch_threads is not None else max(1, ncpu // n)
    return n, threads


def make_cluster(survey, n_todo):
    """``(cluster or None, client address, torch threads or None, description)`` for the survey's scheduler."""
    import dask
    s = survey.scheduler
    if s.kind == "remote":
        return None, s.address, s.torch_threads, f"Dask scheduler {s.address}"
    with dask.config.set({"distributed.scheduler.allowed-failures": survey.retries}):
        if s.kind == "jobqueue":
            jq = s.jobqueue
            cluster = _jobqueue_cluster(jq, s.dashboard_address)
            n_jobs = max(1, math.ceil(n_todo / jq.processes))
            maximum = jq.maximum_jobs if jq.maximum_jobs is not None else max(n_jobs, jq.minimum_jobs)
            cluster.adapt(minimum_jobs=jq.minimum_jobs, maximum_jobs=maximum)
            return (cluster, cluster.scheduler_address, s.torch_threads,
                    f"dask-jobqueue {jq.kind.upper()} cluster (jobs {jq.minimum_jobs}-{maximum}, {jq.cores} cores, "
                    f"{jq.processes} worker(s) per job)")
        from distributed import LocalCluster
        n, threads = local_size(survey, n_todo)
        env = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        # the survey reports failed attempts itself (and their tracebacks go to OUT/NAME/fit.log)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=s.dashboard_address, env=env, silence_logs=logging.CRITICAL)
        return cluster, cluster.scheduler_address, threads, (f"LocalCluster: {n} worker process(es) x 1 fit, "
                                                             f"{threads} torch thread(s) per fit")


def _task_key(galaxy):
    h = hashlib.sha1(galaxy.out_dir.encode()).hexdigest()[:10]
    return f"nuker-mge-fit-{galaxy.name}-{h}"


# ----------------------------------------------------------------------------- results
def _summary(galaxy):
    p = RunDir(galaxy.out_dir).summary_json
    return json.loads(p.read_text()) if p.is_file() else None


def _num(x):
    return float("nan") if x is None else float(x)


def results_rows(galaxies, outcomes):
    """Rows (dicts, in survey order) and the column names of the results table.

    ``outcomes``: name -> ``dict(status, worker, error, wall_time_s)``; a galaxy's numbers come from
    its ``summary.json``.
    """
    summaries = {g.name: _summary(g) for g in galaxies}
    params = []
    for g in galaxies:
        s = summaries[g.name]
        if s is not None and outcomes.get(g.name, {}).get("status") == "done":
            params += [n for n in s["parameters"] if n not in params]
    cols = ["galaxy", "status", "converged", "max_r_hat"]
    cols += [f"{n}_{k}" for n in params for k in ("mean", "std", "r_hat", "ess_bulk")]
    cols += ["wall_time_s", "worker", "error", "log10_mbh_median", "log10_mbh_hdi68_low", "log10_mbh_hdi68_high",
             "log10_mbh_truth", "warnings"]
    rows = []
    for g in galaxies:
        o = outcomes.get(g.name, dict(status="pending"))
        s = summaries[g.name] if o.get("status") == "done" else None
        diag = (s or {}).get("diagnostics") or {}
        conv = diag.get("converged")
        # True / False from a finished fit's summary.json, "" (empty) for a failed or unfinished one
        row = dict(galaxy=g.name, status=o["status"], converged="" if conv is None else bool(conv),
                   max_r_hat=_num(diag.get("max_r_hat")))
        pars = (s or {}).get("parameters", {})
        for n in params:
            p = pars.get(n, {})
            for k in ("mean", "std", "r_hat", "ess_bulk"):
                row[f"{n}_{k}"] = _num(p.get(k))
        wall = (s or {}).get("wall_time_s") if o.get("wall_time_s") is None else o["wall_time_s"]
        row.update(wall_time_s=_num(wall), worker=o.get("worker") or "", error=o.get("error") or "")
        m = pars.get("log10_mbh", {})
        lo, hi = m.get("hdi_68", (None, None))
        truth = ((s or {}).get("truth") or {}).get("log10_mbh", {})
        row.update(log10_mbh_median=_num(m.get("median")), log10_mbh_hdi68_low=_num(lo),
                   log10_mbh_hdi68_high=_num(hi), log10_mbh_truth=_num(truth.get("value")),
                   # the fit's own warnings (sub-pixel sampling, convergence, divergences): what to look at
                   # before trusting a row (older summaries have the MAP's only)
                   warnings=" | ".join((s or {}).get("warnings", ((s or {}).get("map") or {}).get("warnings"))
                                       or []))
        rows.append(row)
    return rows, cols


def write_results_table(out_dir, rows, cols):
    """``OUT/results.csv`` and ``OUT/results.ecsv`` (astropy), both written atomically."""
    out = Path(out_dir)

    def csv_(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({c: (repr(v) if isinstance(v, float) and math.isfinite(v) else
                                ("nan" if isinstance(v, float) else v)) for c, v in r.items()})
    atomic_write(out / "results.csv", csv_)
    from astropy.table import Table
    t = Table(rows=[[r[c] for c in cols] for r in rows] if rows else None, names=cols,
              dtype=[str if c in ("galaxy", "status", "converged", "worker", "error", "warnings") else float
                     for c in cols])
    t.meta["description"] = "nuker-mge survey results: one row per galaxy (see docs/survey.rst)"
    atomic_write(out / "results.ecsv", lambda tmp: t.write(tmp, format="ascii.ecsv", overwrite=True))
    return out / "results.csv", out / "results.ecsv"


def plot_survey(path, rows):
    """log10 M_BH (posterior median, 68% HDI) per galaxy, and the truth where known (mocks)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(rows)
    fig = Figure(figsize=(6.5, max(2.5, 0.45 * n + 1.2)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = list(range(n))[::-1]
    have_post = have_truth = False
    for yi, r in zip(y, rows):
        med = r["log10_mbh_median"]
        if math.isfinite(med):
            ax.errorbar([med], [yi], xerr=[[med - r["log10_mbh_hdi68_low"]], [r["log10_mbh_hdi68_high"] - med]],
                        fmt="o", color="C0", capsize=3, label=None if have_post else "posterior median, 68% HDI")
            have_post = True
        else:
            ax.text(0.02, yi, f"{r['status']}", transform=ax.get_yaxis_transform(), va="center", color="C3",
                    fontsize=8)
        t = r["log10_mbh_truth"]
        if math.isfinite(t):
            ax.plot([t], [yi], marker="x", color="C3", ms=8, ls="none", label=None if have_truth else "truth")
            have_truth = True
    ax.set_yticks(y)
    ax.set_yticklabels([r["galaxy"] for r in rows])
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(r"$\log_{10}\,M_{\rm BH}$ [M$_\odot$]")
    ax.set_title(f"nuker-mge survey: {sum(r['status'] == 'done' for r in rows)} of {n} galaxies fitted")
    if ax.get_legend_handles_labels()[1]:
        ax.legend(loc="best", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    return path


# ----------------------------------------------------------------------------- progress
class _Progress:
    """The line "galaxies: N done, M running, K failed of T", redrawn in place on a terminal."""

    def __init__(self, total, stream, enabled=True):
        self.total, self.stream, self.enabled = total, stream, enabled
        self.done = self.failed = 0
        self.running = set()
        self.lock = threading.Lock()
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.last = None

    def line(self):
        return (f"galaxies: {self.done} done, {len(self.running)} running, {self.failed} failed "
                f"of {self.total}")

    def show(self, force=False):
        if not self.enabled:
            return
        with self.lock:
            text = self.line()
            if text == self.last and not force:
                return
            self.last = text
            self.stream.write(("\r\x1b[K" + text) if self.tty else text + "\n")
            self.stream.flush()

    def message(self, text):
        """A line of its own (a failure), then the progress line again."""
        with self.lock:
            if self.tty and self.last is not None:
                self.stream.write("\r\x1b[K")
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last = None
        self.show()

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _error_text(exc):
    if type(exc).__name__ == "KilledWorker":
        return f"KilledWorker: its worker died {getattr(exc, 'allowed_failures', '?')} + 1 times during the fit"
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def run_survey(survey, out_dir, *, progress=True, stream=None, client=None, poll_s=0.5):
    """Fit every unfinished galaxy of ``survey`` on its Dask scheduler; write the results table and plot.

    ``client``: an existing :class:`distributed.Client` to use instead of the survey's scheduler.
    Returns ``dict(rows, columns, n_done, n_failed, n_unconverged, paths)`` (``n_unconverged``: finished
    fits whose chains did not converge).
    """
    from distributed import Client, as_completed

    stream = sys.stdout if stream is None else stream
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    galaxies = survey.galaxies
    outcomes, todo = {}, []
    for g in galaxies:
        if galaxy_state(g) == "done":
            done = [a for a in read_attempts(g.out_dir) if a.get("event") == "done"]
            outcomes[g.name] = dict(status="done", worker=done[-1]["worker"] if done else "",
                                    wall_time_s=done[-1]["wall_time_s"] if done else None)
        else:
            todo.append(g)
    n_skip = len(galaxies) - len(todo)
    print(f"survey {survey.source}: {len(galaxies)} galaxies, {n_skip} already finished, "
          f"{sum(galaxy_state(g) == 'resume' for g in todo)} to resume, "
          f"{sum(galaxy_state(g) == 'new' for g in todo)} new; results in {out}", file=stream, flush=True)
    _write_survey_record(out, survey)
    prog = _Progress(len(galaxies), stream, enabled=progress)
    prog.done = n_skip
    cluster = None
    own_client = client is None
    try:
        if todo:
            if own_client:
                cluster, address, threads, desc = make_cluster(survey, len(todo))
                client = Client(cluster if cluster is not None else address)
            else:
                threads, desc = survey.scheduler.torch_threads, f"Dask client {client.scheduler.address}"
            print(f"{desc}; dashboard: {client.dashboard_link}", file=stream, flush=True)

            def on_event(event):
                msg = event[1] if isinstance(event, tuple) else event
                name = msg.get("galaxy")
                if name not in names:
                    return
                if msg.get("event") == "start":
                    with prog.lock:
                        prog.running.add(name)
                    if msg.get("attempt", 1) > 1:
                        prog.message(f"galaxy {name}: attempt {msg['attempt']} on {msg.get('worker')}"
                                     + (", resuming from its checkpoints" if msg.get("resumed") else ""))
                elif msg.get("event") == "error":
                    prog.message(f"galaxy {name}: attempt {msg.get('attempt')} failed on {msg.get('worker')}: "
                                 f"{msg.get('error')}")
                prog.show()

            names = {g.name for g in todo}
            try:
                client.subscribe_topic(EVENT_TOPIC, on_event)
            except (AttributeError, TypeError):
                pass
            resources = {FIT_RESOURCE: 1} if survey.scheduler.kind == "jobqueue" else None
            futures = {}
            for g in todo:
                f = client.submit(fit_galaxy, g.name, g.config, g.out_dir, threads, pure=False,
                                  retries=survey.retries, key=_task_key(g), resources=resources)
                futures[f] = g
            prog.show(force=True)
            for f in as_completed(list(futures)):
                g = futures[f]
                with prog.lock:
                    prog.running.discard(g.name)
                if f.status == "finished":
                    r = f.result()
                    outcomes[g.name] = dict(status="done", worker=r["worker"], wall_time_s=r["wall_time_s"])
                    prog.done += 1
                    prog.show()
                else:
                    err = _error_text(f.exception())
                    outcomes[g.name] = dict(status="failed", error=err, worker=_last_worker(g))
                    prog.failed += 1
                    prog.message(f"galaxy {g.name} failed: {err} (log: {Path(g.out_dir) / 'fit.log'})")
                rows, cols = results_rows(galaxies, outcomes)
                write_results_table(out, rows, cols)
            try:
                client.unsubscribe_topic(EVENT_TOPIC)
            except (AttributeError, KeyError, TypeError, ValueError):
                pass
        else:
            prog.show(force=True)
    finally:
        prog.close()
        if own_client and client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    rows, cols = results_rows(galaxies, outcomes)
    csv_path, ecsv_path = write_results_table(out, rows, cols)
    png = plot_survey(out / "survey_mbh.png", rows)
    n_done = sum(r["status"] == "done" for r in rows)
    n_failed = sum(r["status"] == "failed" for r in rows)
    n_unconverged = sum(r["converged"] is False for r in rows)
    unconv = (f" (warning: {n_unconverged} not converged: see the converged column)" if n_unconverged else "")
    print(f"{n_done} of {len(rows)} galaxies fitted{unconv}, {n_failed} failed; wrote {csv_path}, "
          f"{ecsv_path.name}, {Path(png).name}", file=stream, flush=True)
    return dict(rows=rows, columns=cols, n_done=n_done, n_failed=n_failed, n_unconverged=n_unconverged,
                paths=dict(csv=str(csv_path), ecsv=str(ecsv_path), plot=str(png)))


def _last_worker(g):
    att = read_attempts(g.out_dir)
    return att[-1].get("worker", "") if att else ""


def _write_survey_record(out, survey):
    rec = dict(source=survey.source, retries=survey.retries, scheduler=survey.scheduler.kind,
               galaxies={g.name: g.config for g in survey.galaxies})
    atomic_write(out / "survey.json", lambda tmp: Path(tmp).write_text(json.dumps(rec, indent=2) + "\n"))


def describe_plan(survey):
    """The dry run's lines: each galaxy's state and where it goes."""
    lines = [f"survey {survey.source}: {len(survey.galaxies)} galaxies, scheduler: {survey.scheduler.kind}"
             + (f" ({survey.scheduler.address})" if survey.scheduler.kind == "remote" else "")]
    for g in survey.galaxies:
        lines.append(f"  {g.name}: {galaxy_state(g)} ({g.config} -> {g.out_dir})")
    if survey.scheduler.kind == "local":
        n, t = local_size(survey, sum(galaxy_state(g) != "done" for g in survey.galaxies))
        lines.append(f"LocalCluster: {n} worker process(es), {t} torch thread(s) per fit")
    return lines
