"""Training of the Nuker -> MGE emulator (``nuker-mge train``).

Loss (per profile, averaged over the batch), trained *through the profile* as in the
seed paper's eq. (4) but on fractional errors, since the profiles span ~15 decades:

    mean_j e_j^2 + w_M e_M^2 + w_max max_j e_j^2,
    e_j = Sigma_MGE(r_j) / Sigma_N(r_j) - 1   over log-spaced r_j in [3 pc, 3 kpc],
    e_M = M2D_MGE(<3 pc) / M2D_N(<3 pc) - 1   (docs/metrics.rst M1b; it sets v_c at small radii).

The max term targets the M1 statistic itself (the max over radii), which a mean-square
loss lets grow in the few narrow features (sharp alpha >= 5 breaks) where it sits.

Reproducibility: the model is initialised from ``--seed``; the batches, and the radius
jitter, come from seeded CPU generators whose states are checkpointed with the model,
the optimiser and the step, so an interrupted run resumes exactly where it stopped.
With ``--steps`` a run is deterministic for a given seed and device (CUDA: deterministic
cuBLAS workspace). With only ``--minutes`` the step count, and with it the cosine
schedule, is fixed from the throughput measured over the first steps and stored in the
checkpoint: a resumed run keeps it.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .._argparse import HelpFormatter
from .._files import atomic_write
from ..basis import MASS_R0_PC, SIGMA_GRID_PC, metric_radii_pc
from ..projector import gaussian_enclosed_mass_2d
from .data import make_sampler, profile_targets, sample_box, training_radii_pc, unit_to_params
from .export import export
from .model import OUTPUTS, NukerMGEEmulator

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.json"
PLOT_FILE = "loss_curve.png"
#: Seed of the held-out M1 draws; no training seed reaches them (continuous draws never repeat).
EVAL_SEED = 987654321

DEFAULTS = dict(width=384, depth=4, output="nuker_scaled", c=0.1, n_fourier=0, batch=1024, lr=1e-3, lr_min=1e-6,
                warmup=200, mass_weight=1.0, max_weight=0.1, n_radii=128, grid="random", dtype="float64",
                eval_n=2048, n_evals=20, ckpt_every_s=60.0, hard_fraction=0.0, hard_pool=65536,
                hard_keep=4096, hard_every=200, hard_jitter=0.01)


# ---------------------------------------------------------------------------------------------
# Loss and metrics
# ---------------------------------------------------------------------------------------------

def gaussian_design(radii_pc, sigma_pc):
    """g_i(r_j) = exp(-r_j^2 / (2 sigma_i^2)), shape (N, K); radii and sigmas in pc."""
    return torch.exp(-0.5 * (radii_pc[:, None] / sigma_pc[None, :]) ** 2)


def fractional_errors(amp, ln_sigma_true, ln_mass_true, design, m_basis):
    """Fractional profile errors (B, N) and enclosed-mass errors (B,) of MGE amplitudes ``amp`` (B, K)."""
    e_prof = (amp @ design.T) * torch.exp(-ln_sigma_true) - 1.0
    e_mass = (amp @ m_basis) * torch.exp(-ln_mass_true) - 1.0
    return e_prof, e_mass


def loss_terms(e_prof, e_mass, mass_weight, max_weight):
    """Scalar loss and its parts (module docstring)."""
    mse = (e_prof**2).mean()
    mass = (e_mass**2).mean()
    worst = (e_prof**2).amax(dim=1).mean()
    return mse + mass_weight * mass + max_weight * worst, {"mse": mse, "mass": mass, "max": worst}


def m1_per_draw(amp, params, radii_pc=None):
    """docs/metrics.rst M1 quantities per draw: eps (max fractional error over 3 pc-3 kpc), M1b, kappa.

    ``amp`` (B, 64) amplitudes for Sigma_b = 1, ``params`` (B, 4) = (alpha, beta, gamma, r_b_pc).
    Returns three float64 numpy arrays of shape (B,).
    """
    amp = amp.detach().to(torch.float64)
    params = params.detach().to(device=amp.device, dtype=torch.float64)
    r = torch.as_tensor(metric_radii_pc() if radii_pc is None else radii_pc, dtype=torch.float64, device=amp.device)
    sigma = torch.tensor(SIGMA_GRID_PC, dtype=torch.float64, device=amp.device)
    design = gaussian_design(r, sigma)
    ln_true, ln_m = profile_targets(params, r)
    e_prof, e_mass = fractional_errors(amp, ln_true, ln_m, design, gaussian_enclosed_mass_2d(sigma, MASS_R0_PC))
    kappa = ((amp.abs() @ design.T) / (amp @ design.T).abs()).amax(dim=1)
    return (e_prof.abs().amax(dim=1).cpu().numpy(), e_mass.abs().cpu().numpy(), kappa.cpu().numpy())


def _stats(x, keys=("median", "p90", "p99", "max")):
    q = {"median": 50, "p90": 90, "p99": 99, "max": 100}
    return {k: float(np.percentile(x, q[k])) for k in keys} if x.size else {}


def summarize_m1(eps, m1b, kappa, alpha):
    """M1 summary dict: eps overall and split by alpha (<=1, 1-3, 3-10), M1b and kappa."""
    alpha = np.asarray(alpha)
    split = {"alpha<=1": alpha <= 1, "1<alpha<=3": (alpha > 1) & (alpha <= 3), "3<alpha<=10": alpha > 3}
    return {"n": int(eps.size), "eps": _stats(eps),
            "eps_by_alpha": {k: {"n": int(m.sum()), **_stats(eps[m])} for k, m in split.items()},
            "m1b": _stats(m1b, ("median", "p99", "max")), "kappa": _stats(kappa, ("median", "p99", "max"))}


@torch.no_grad()
def evaluate(model, params, chunk=4096):
    """Held-out M1 summary of ``model`` on shape vectors ``params`` (B, 4)."""
    outs = [[], [], []]
    dev, dt = _model_device_dtype(model)
    for p in params.split(chunk):
        p = p.to(device=dev, dtype=dt)
        for acc, val in zip(outs, m1_per_draw(model(p), p)):
            acc.append(val)
    eps, m1b, kappa = (np.concatenate(o) for o in outs)
    return summarize_m1(eps, m1b, kappa, params[:, 0].cpu().numpy())


def _model_device_dtype(model):
    p = next(model.parameters())
    return p.device, p.dtype


# ---------------------------------------------------------------------------------------------
# Hard-example mining
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def hardness_of(model, params, radii_pc, design, m_basis):
    """Per-shape max(max_j |e_j|, |e_M|) of ``model`` on ``params`` (B, 4) at ``radii_pc`` (N,) [pc]."""
    ln_true, ln_m = profile_targets(params, radii_pc)
    e_prof, e_mass = fractional_errors(model(params), ln_true, ln_m, design, m_basis)
    return torch.maximum(e_prof.abs().amax(dim=1), e_mass.abs())


class HardExampleMiner:
    """The ``keep`` worst shapes of a fresh random pool of ``pool``, re-mined every ``every`` steps.

    M1 is a tail statistic (the p99 over draws of the max over radii), and its tail sits in
    small corners of the box (beta - gamma > 2 with alpha < 0.2 or alpha > 4). Uniform batches
    visit them rarely; drawing a fraction of each batch around the current worst shapes
    (``jitter``: Gaussian scatter in unit-cube coordinates, so the net learns neighbourhoods
    rather than points) spends the steps where the metric is made. Hardness is the larger of
    the max fractional profile error on the training radii and the 3-pc mass error.
    """

    def __init__(self, seed, device, pool, keep, every, jitter):
        if not 0 < keep <= pool:
            raise ValueError(f"hard_keep = {keep} must be in [1, hard_pool = {pool}]")
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.pool, self.keep, self.every, self.jitter = int(pool), int(keep), int(every), float(jitter)
        self.unit = None  # (keep, 4) unit-cube coordinates of the hardest shapes found

    def due(self, step):
        return self.unit is None or step % self.every == 0

    @torch.no_grad()
    def refresh(self, model, sigma, m_basis, n_radii, chunk=16384):
        dtype, device = sigma.dtype, sigma.device
        u = torch.rand(self.pool, 4, generator=self.generator, dtype=dtype, device=device)
        r = training_radii_pc(n_radii, 0.5, dtype, device)
        design = gaussian_design(r, sigma)
        hardness = torch.cat([hardness_of(model, unit_to_params(uc), r, design, m_basis) for uc in u.split(chunk)])
        self.unit = u[hardness.topk(self.keep).indices]

    def draw(self, n, dtype):
        """``n`` shapes (n, 4) scattered around the kept hard set."""
        device = self.generator.device
        i = torch.randint(self.keep, (n,), generator=self.generator, device=device)
        u = self.unit[i].to(dtype) + self.jitter * torch.randn(n, 4, generator=self.generator, dtype=dtype,
                                                               device=device)
        return unit_to_params(u.clamp(0.0, 1.0))

    def state_dict(self):
        return {"generator": self.generator.get_state(), "unit": self.unit}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        self.unit = state["unit"]


# ---------------------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------------------

def learning_rate(step, total, lr, lr_min, warmup):
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``lr`` to ``lr_min`` at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * t))


def _resolve_device(name):
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def _seed_everything(seed, device):
    if device.type == "cuda":
        # Deterministic cuBLAS needs this before the first CUDA call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)


class Trainer:
    """State of one training run: model, optimiser, samplers, step counter and logs."""

    def __init__(self, cfg):
        self.cfg = cfg = {**DEFAULTS, **cfg}
        self.out = Path(cfg["out"])
        self.device = _resolve_device(cfg["device"])
        self.dtype = getattr(torch, cfg["dtype"])
        _seed_everything(cfg["seed"], self.device)
        self.model = NukerMGEEmulator(cfg["width"], cfg["depth"], cfg["output"], cfg["c"],
                                      cfg["n_fourier"]).to(self.device, self.dtype)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"])
        self.sampler = make_sampler(cfg["grid"], cfg["seed"], self.device)
        self.miner = None
        if not 0.0 <= cfg["hard_fraction"] < 1.0:
            raise ValueError(f"hard_fraction = {cfg['hard_fraction']} must be in [0, 1)")
        if cfg["hard_fraction"] > 0:
            self.miner = HardExampleMiner(cfg["seed"] + 2, self.device, cfg["hard_pool"], cfg["hard_keep"],
                                          cfg["hard_every"], cfg["hard_jitter"])
        self.jitter_gen = torch.Generator().manual_seed(cfg["seed"] + 1)
        self.sigma = torch.tensor(SIGMA_GRID_PC, dtype=self.dtype, device=self.device)
        self.m_basis = gaussian_enclosed_mass_2d(self.sigma, MASS_R0_PC)
        self.eval_params = sample_box(cfg["eval_n"], EVAL_SEED)
        self.step = 0
        self.total_steps = cfg.get("steps")
        self.wall_s = 0.0
        self.lr_now = float(cfg["lr"])
        self.log = {"loss_steps": [], "loss": [], "mse": [], "mass": [], "max": [], "evals": []}

    # -- checkpointing -------------------------------------------------------------------------
    def state(self):
        return {"cfg": self.cfg, "model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "sampler": self.sampler.state_dict(), "jitter_gen": self.jitter_gen.get_state(),
                "miner": self.miner.state_dict() if self.miner else None,
                "step": self.step, "total_steps": self.total_steps, "wall_s": self.wall_s, "log": self.log}

    def save_checkpoint(self):
        self.out.mkdir(parents=True, exist_ok=True)
        state = self.state()
        atomic_write(self.out / CHECKPOINT_FILE, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self, path):
        st = torch.load(path, map_location=self.device, weights_only=False)
        for key in ("width", "depth", "output", "c", "n_fourier", "grid", "seed", "dtype", "hard_fraction"):
            if st["cfg"].get(key, DEFAULTS.get(key)) != self.cfg[key]:
                raise SystemExit(f"cannot resume {path}: it was trained with {key}={st['cfg'].get(key)!r}, "
                                 f"this command asks for {self.cfg[key]!r} (use another --out or --fresh)")
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.sampler.load_state_dict(st["sampler"])
        self.jitter_gen.set_state(st["jitter_gen"])
        if self.miner and st.get("miner"):
            self.miner.load_state_dict(st["miner"])
        self.step, self.total_steps, self.wall_s, self.log = st["step"], st["total_steps"], st["wall_s"], st["log"]

    # -- one step ------------------------------------------------------------------------------
    def next_batch(self):
        """Shapes (B, 4), their targets, and the Gaussian design matrix of this step's radii."""
        cfg = self.cfg
        n_hard = int(round(cfg["hard_fraction"] * cfg["batch"])) if self.miner else 0
        if self.miner and self.miner.due(self.step):
            self.miner.refresh(self.model, self.sigma, self.m_basis, cfg["n_radii"])
        params = self.sampler(cfg["batch"] - n_hard, torch.float64).to(self.device, self.dtype)
        if n_hard:
            params = torch.cat([params, self.miner.draw(n_hard, self.dtype)])
        jitter = float(torch.rand((), generator=self.jitter_gen, dtype=torch.float64))
        r = training_radii_pc(cfg["n_radii"], jitter, self.dtype, self.device)
        with torch.no_grad():
            ln_true, ln_m = profile_targets(params, r)
        return params, ln_true, ln_m, gaussian_design(r, self.sigma)

    def loss(self, params, ln_true, ln_m, design):
        e_prof, e_mass = fractional_errors(self.model(params), ln_true, ln_m, design, self.m_basis)
        return loss_terms(e_prof, e_mass, self.cfg["mass_weight"], self.cfg["max_weight"])

    def train_step(self):
        params, ln_true, ln_m, design = self.next_batch()
        self.lr_now = learning_rate(self.step, self.total_steps, self.cfg["lr"], self.cfg["lr_min"],
                                    self.cfg["warmup"])
        for g in self.opt.param_groups:
            g["lr"] = self.lr_now
        loss, parts = self.loss(params, ln_true, ln_m, design)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return loss.detach(), {k: v.detach() for k, v in parts.items()}

    def run_eval(self):
        self.model.eval()
        summary = evaluate(self.model, self.eval_params)
        self.model.train()
        self.log["evals"].append({"step": self.step, "wall_s": round(self.wall_s, 2), **summary})
        return summary


def _estimate_total_steps(trainer, budget_s, probe_steps):
    """Run ``probe_steps`` steps, time them, and return the step count that fills ``budget_s``."""
    trainer.total_steps = 10**9  # placeholder during the probe: warm-up only depends on step
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    # The first steps pay for CUDA/allocator start-up: time only the steps after them.
    n_warm = min(10, probe_steps // 2)
    for _ in range(n_warm):
        trainer.train_step()
    sync()
    t0 = time.perf_counter()
    for _ in range(probe_steps - n_warm):
        trainer.train_step()
    sync()
    per_step = (time.perf_counter() - t0) / (probe_steps - n_warm)
    # ~8% of the budget goes to held-out evaluations and checkpoints.
    return max(probe_steps + 1, int(0.92 * budget_s / per_step)), per_step


def _load_weights(path, device, dtype):
    """Model state_dict from an emulator_state.pt (export) or a checkpoint.pt (training) file."""
    blob = torch.load(path, map_location=device, weights_only=False)
    state = blob["state_dict"] if "state_dict" in blob else blob["model"]
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def train(cfg, progress=True):
    """Train (or resume) an emulator as described by ``cfg`` (see ``add_cli``); returns the log dict."""
    from .._progress import progress_bar

    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    trainer = Trainer(cfg)
    ckpt = out / CHECKPOINT_FILE
    resumed = ckpt.exists() and not cfg.get("fresh")
    if resumed:
        trainer.load_checkpoint(ckpt)
    elif cfg.get("init_from"):
        # Fine-tuning: start from exported weights (or a checkpoint), with a fresh optimiser
        # and schedule; same architecture required.
        try:
            trainer.model.load_state_dict(_load_weights(cfg["init_from"], trainer.device, trainer.dtype))
        except RuntimeError as err:
            raise SystemExit(f"--init-from {cfg['init_from']}: its network does not match --width "
                             f"{cfg['width']} --depth {cfg['depth']} --n-fourier {cfg['n_fourier']} "
                             f"({str(err).splitlines()[-1].strip()})") from None
    t_start = time.perf_counter()
    budget_s = 60.0 * cfg["minutes"] if cfg.get("minutes") else float("inf")
    if trainer.total_steps is None:
        if not math.isfinite(budget_s):
            raise SystemExit("give --steps or --minutes")
        probe = max(5, min(200, cfg.get("probe_steps", 100)))
        trainer.total_steps, per_step = _estimate_total_steps(trainer, budget_s, probe)
        trainer.log["probe_s_per_step"] = per_step
    total = trainer.total_steps
    eval_every = max(1, total // max(1, cfg["n_evals"]))
    log_every = max(1, min(100, total // 500))

    bar = progress_bar(total=total, initial=trainer.step, disable=not progress, dynamic_ncols=True,
               mininterval=cfg.get("tqdm_interval", 1.0), desc="train", file=sys.stdout)
    acc = {"loss": 0.0, "mse": 0.0, "mass": 0.0, "max": 0.0}
    n_acc, last_ckpt, stopped_early = 0, time.perf_counter(), False
    wall0 = trainer.wall_s
    try:
        while trainer.step < total:
            loss, parts = trainer.train_step()
            acc["loss"] += loss
            for k in parts:
                acc[k] += parts[k]
            n_acc += 1
            bar.update(1)
            now = time.perf_counter()
            trainer.wall_s = wall0 + (now - t_start)
            if trainer.step % log_every == 0 or trainer.step == total:
                vals = {k: float(v) / n_acc for k, v in acc.items()}
                if not math.isfinite(vals["loss"]):
                    raise FloatingPointError(f"loss became {vals['loss']} at step {trainer.step}")
                trainer.log["loss_steps"].append(trainer.step)
                for k, v in vals.items():
                    trainer.log[k].append(v)
                bar.set_postfix(loss=f"{vals['loss']:.3e}", lr=f"{trainer.lr_now:.1e}")
                acc = dict.fromkeys(acc, 0.0)
                n_acc = 0
            if trainer.step % eval_every == 0 or trainer.step == total:
                s = trainer.run_eval()
                bar.write(f"step {trainer.step}/{total} wall {trainer.wall_s:.0f}s  held-out M1 eps median "
                          f"{s['eps']['median']:.2e} p90 {s['eps']['p90']:.2e} p99 {s['eps']['p99']:.2e} "
                          f"max {s['eps']['max']:.2e}  M1b p99 {s['m1b']['p99']:.2e}")
                trainer.save_checkpoint()
                last_ckpt = time.perf_counter()
            elif now - last_ckpt > cfg["ckpt_every_s"]:
                trainer.save_checkpoint()
                last_ckpt = now
            if now - t_start > budget_s * 1.05 and trainer.step < total:
                stopped_early = True
                bar.write(f"wall-clock budget reached at step {trainer.step}/{total}: checkpointed; "
                          "run the same command again to resume")
                break
    except KeyboardInterrupt:
        stopped_early = True
        bar.write(f"interrupted at step {trainer.step}: checkpointed; run the same command again to resume")
    finally:
        bar.close()
        trainer.save_checkpoint()

    final = trainer.log["evals"][-1] if trainer.log["evals"] and trainer.log["evals"][-1]["step"] == trainer.step \
        else {"step": trainer.step, **trainer.run_eval()}
    trainer.log.update({"config": cfg, "total_steps": total, "completed": not stopped_early,
                        "wall_s": trainer.wall_s, "device": str(trainer.device),
                        "device_name": torch.cuda.get_device_name() if trainer.device.type == "cuda" else "cpu",
                        "torch": torch.__version__, "threads": torch.get_num_threads(), "resumed": resumed,
                        "final_eval": final})
    (out / LOG_FILE).write_text(json.dumps(trainer.log, indent=1, default=str))
    plot_log(trainer.log, out / PLOT_FILE)
    export(trainer.model, out, meta={"trained": {k: trainer.log[k] for k in (
        "total_steps", "completed", "wall_s", "device", "device_name", "torch", "threads")},
        "command": cfg.get("command"), "train_config": cfg, "held_out_m1": final})
    return trainer.log


def plot_log(log, path):
    """PNG of the training loss (and its parts) and of the held-out M1 eps percentiles vs step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("loss", "k-"), ("mse", "C0-"), ("mass", "C1-"), ("max", "C2-")):
        if log[key]:
            a1.plot(log["loss_steps"], log[key], style, lw=0.8, label=key)
    a1.set(xlabel="step", ylabel="loss", yscale="log", title="training loss (batch means)")
    a1.legend()
    if log["evals"]:
        steps = [e["step"] for e in log["evals"]]
        for q, style in (("median", "C0o-"), ("p90", "C1o-"), ("p99", "C3o-")):
            a2.plot(steps, [e["eps"][q] for e in log["evals"]], style, ms=3, label=f"eps {q}")
        a2.plot(steps, [e["m1b"]["p99"] for e in log["evals"]], "C2s--", ms=3, label="M1b p99")
    a2.set(xlabel="step", ylabel="fractional error", yscale="log", title="held-out M1")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _number(kind, lo=None, hi=None, lo_open=False, hi_open=False):
    """argparse ``type=``: a finite ``kind`` (int or float) in [lo, hi] (``*_open``: excluded)."""
    def parse(text):
        try:
            x = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
                from None
        bad = not math.isfinite(x) or (lo is not None and (x <= lo if lo_open else x < lo)) \
            or (hi is not None and (x >= hi if hi_open else x > hi))
        if bad:
            rng = (("(" if lo_open else "[") + ("-inf" if lo is None else f"{lo:g}") + ", "
                   + ("inf" if hi is None else f"{hi:g}") + (")" if hi_open or hi is None else "]"))
            raise argparse.ArgumentTypeError(f"{text} is invalid: it must be finite and in {rng}")
        return x
    parse.__name__ = kind.__name__
    return parse


_POS_INT = _number(int, 1)
_NONNEG_INT = _number(int, 0)
_POS_FLOAT = _number(float, 0, lo_open=True)
_NONNEG_FLOAT = _number(float, 0)


def add_cli(subparsers):
    """Register the ``train`` sub-command on an argparse ``subparsers`` object."""
    p = subparsers.add_parser("train", help="train the Nuker -> MGE neural emulator",
                              description=__doc__.split("\n\n")[0].replace("``", "'"),
                              formatter_class=HelpFormatter)
    p.add_argument("--out", required=True, help="output folder: checkpoint, log, PNG and the exported emulator")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="training device")
    p.add_argument("--minutes", type=_POS_FLOAT, default=None,
                   help="wall-clock budget of this invocation [min]; without --steps it also fixes the schedule")
    p.add_argument("--steps", type=_POS_INT, default=None, help="total optimiser steps (deterministic schedule)")
    p.add_argument("--seed", type=_NONNEG_INT, default=0, help="seed of the initial weights, batches and jitter")
    p.add_argument("--grid", default=DEFAULTS["grid"], choices=("paper", "random"),
                   help="paper: the 50^4 Appendix-A grid; random: continuous uniform draws in the same box")
    p.add_argument("--width", type=_POS_INT, default=DEFAULTS["width"], help="neurons per hidden layer")
    p.add_argument("--depth", type=_POS_INT, default=DEFAULTS["depth"], help="number of hidden layers")
    p.add_argument("--output", default=DEFAULTS["output"], choices=OUTPUTS,
                   help="output head: how the network's 64 outputs become amplitudes (emulator/model.py)")
    p.add_argument("--c", type=float, default=DEFAULTS["c"], help="offset of the nuker_scaled output head")
    p.add_argument("--n-fourier", type=_NONNEG_INT, default=DEFAULTS["n_fourier"],
                   help="octaves of Fourier input features per box coordinate (0: plain inputs)")
    p.add_argument("--batch", type=_POS_INT, default=DEFAULTS["batch"], help="Nuker shapes per optimiser step")
    p.add_argument("--lr", type=_POS_FLOAT, default=DEFAULTS["lr"], help="peak Adam learning rate")
    p.add_argument("--lr-min", type=_NONNEG_FLOAT, default=DEFAULTS["lr_min"],
                   help="learning rate at the end of the cosine decay")
    p.add_argument("--warmup", type=_NONNEG_INT, default=DEFAULTS["warmup"],
                   help="steps of linear learning-rate warm-up")
    p.add_argument("--mass-weight", type=_NONNEG_FLOAT, default=DEFAULTS["mass_weight"],
                   help="weight w_M of the squared 3-pc projected-mass error in the loss")
    p.add_argument("--max-weight", type=_NONNEG_FLOAT, default=DEFAULTS["max_weight"],
                   help="weight w_max of the worst squared profile error of each shape in the loss")
    p.add_argument("--n-radii", type=_POS_INT, default=DEFAULTS["n_radii"],
                   help="log-spaced radii in 3 pc-3 kpc per step (jittered every step)")
    p.add_argument("--dtype", default=DEFAULTS["dtype"], choices=("float64", "float32"),
                   help="floating-point type of the network and the loss")
    p.add_argument("--eval-n", type=_POS_INT, default=DEFAULTS["eval_n"], help="held-out M1 draws")
    p.add_argument("--n-evals", type=_POS_INT, default=DEFAULTS["n_evals"], help="held-out evaluations per run")
    p.add_argument("--ckpt-every-s", type=_POS_FLOAT, default=DEFAULTS["ckpt_every_s"],
                   help="seconds between checkpoints (besides one at every held-out evaluation)")
    p.add_argument("--hard-fraction", type=_number(float, 0, 1, hi_open=True), default=DEFAULTS["hard_fraction"],
                   help="fraction of each batch drawn around the worst shapes of a mined pool (0: off)")
    p.add_argument("--hard-pool", type=_POS_INT, default=DEFAULTS["hard_pool"], help="random shapes per mining round")
    p.add_argument("--hard-keep", type=_POS_INT, default=DEFAULTS["hard_keep"], help="worst shapes kept per round")
    p.add_argument("--hard-every", type=_POS_INT, default=DEFAULTS["hard_every"], help="steps between mining rounds")
    p.add_argument("--hard-jitter", type=_NONNEG_FLOAT, default=DEFAULTS["hard_jitter"],
                   help="Gaussian scatter around kept shapes, in unit-box coordinates")
    p.add_argument("--threads", type=_POS_INT, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--init-from", default=None,
                   help="start from these weights (emulator_state.pt or checkpoint.pt; fine-tuning)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tqdm-interval", type=_POS_FLOAT, default=1.0, help="seconds between progress-bar refreshes")
    p.set_defaults(func=_cli_train)
    return p


def check_cli_args(cfg):
    """Refuse, before anything is created, what would fail later or train silently wrong (ValueError)."""
    if cfg["minutes"] is None and cfg["steps"] is None:
        raise ValueError("give --minutes or --steps")
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    out = Path(cfg["out"])
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if cfg["lr_min"] > cfg["lr"]:
        raise ValueError(f"--lr-min {cfg['lr_min']:g} is above --lr {cfg['lr']:g}")
    if cfg["hard_fraction"] > 0 and cfg["hard_keep"] > cfg["hard_pool"]:
        raise ValueError(f"--hard-keep {cfg['hard_keep']} is above --hard-pool {cfg['hard_pool']}")
    if cfg["init_from"] is not None and not Path(cfg["init_from"]).is_file():
        raise ValueError(f"--init-from {cfg['init_from']}: no such file")


def _cli_train(args):
    cfg = {k: v for k, v in vars(args).items() if k not in ("func", "no_progress", "command")}
    cfg["command"] = " ".join(shlex.quote(a) for a in sys.argv)
    check_cli_args(cfg)
    log = train(cfg, progress=not args.no_progress)
    print(json.dumps({"out": str(cfg["out"]), "steps": log["total_steps"], "completed": log["completed"],
                      "wall_s": round(log["wall_s"], 1), "held_out_m1": log["final_eval"]}, indent=1))
    return 0


def main(argv=None):
    """``python -m nuker_mge_plugin.emulator.train ...``: the train sub-command alone."""
    parser = argparse.ArgumentParser(prog="nuker-mge")
    sub = parser.add_subparsers(dest="command", required=True)
    add_cli(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except ValueError as err:
        print(f"nuker-mge train: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
