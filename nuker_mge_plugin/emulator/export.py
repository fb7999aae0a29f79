"""Export and loading of a trained emulator: TorchScript file + plain state_dict fallback.

An exported emulator is a folder with three files:

- ``emulator.ts.pt``: the TorchScript module (self-contained: runs without this package);
- ``emulator_state.pt``: a plain ``state_dict`` + constructor config, loaded with
  ``torch.load(weights_only=True)`` and rebuilt as ``NukerMGEEmulator`` when TorchScript is
  unavailable (it is deprecated in torch 2.x) or fails;
- ``emulator.json``: config, provenance (command, seed, steps, wall time) and held-out metrics.

Weights are stored in float32 (half the size; the rounding moves amplitudes by ~1e-7
relative, far below the emulator's ~1e-3 error) and cast to the requested dtype at load.
"""

import contextlib
import json
import warnings
from pathlib import Path

import torch

from .model import NukerMGEEmulator

TORCHSCRIPT_FILE = "emulator.ts.pt"
STATE_FILE = "emulator_state.pt"
META_FILE = "emulator.json"
STORE_DTYPE = torch.float32


@contextlib.contextmanager
def _quiet_torchscript():
    """Silence TorchScript's deprecation warnings here only (it still works in torch 2.13)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*TorchScript.*")
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*TorchScript.*")
        yield


def export(model, out_dir, meta=None, torchscript=True):
    """Write ``model`` to ``out_dir`` (created); returns the list of written paths.

    ``meta`` (JSON-serialisable dict) is merged into emulator.json.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stored = NukerMGEEmulator(**model.config())
    stored.load_state_dict(model.state_dict())
    stored = stored.to(device="cpu", dtype=STORE_DTYPE).eval()
    written = []
    torch.save({"config": stored.config(), "state_dict": stored.state_dict()}, out / STATE_FILE)
    written.append(out / STATE_FILE)
    if torchscript:
        with _quiet_torchscript():
            torch.jit.save(torch.jit.script(stored), str(out / TORCHSCRIPT_FILE))
        written.append(out / TORCHSCRIPT_FILE)
    info = {"config": stored.config(), "store_dtype": str(STORE_DTYPE).replace("torch.", ""),
            "files": [p.name for p in written], **(meta or {})}
    (out / META_FILE).write_text(json.dumps(info, indent=2, default=str))
    written.append(out / META_FILE)
    return written


def load_state_module(path_dir, device="cpu", dtype=torch.float64):
    """Rebuild the eager ``NukerMGEEmulator`` from ``emulator_state.pt`` (no TorchScript)."""
    blob = torch.load(Path(path_dir) / STATE_FILE, map_location="cpu", weights_only=True)
    model = NukerMGEEmulator(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    return model.to(device=device, dtype=dtype).eval()


def load_torchscript_module(path_dir, device="cpu", dtype=torch.float64):
    """Load ``emulator.ts.pt`` with ``torch.jit.load`` on ``device`` and cast it to ``dtype``."""
    with _quiet_torchscript():
        module = torch.jit.load(str(Path(path_dir) / TORCHSCRIPT_FILE), map_location=torch.device(device))
    return module.to(dtype).eval()


def load_module(path_dir, device="cpu", dtype=torch.float64, prefer="torchscript"):
    """Load an exported emulator; TorchScript first (``prefer='torchscript'``), else the state_dict.

    Returns (module, kind) with kind 'torchscript' or 'state_dict'.
    """
    if prefer == "torchscript" and (Path(path_dir) / TORCHSCRIPT_FILE).exists():
        try:
            return load_torchscript_module(path_dir, device, dtype), "torchscript"
        except Exception as err:  # noqa: BLE001 - any TorchScript failure falls back to eager
            warnings.warn(f"TorchScript emulator could not be loaded ({err}); using the state_dict fallback",
                          RuntimeWarning, stacklevel=2)
    return load_state_module(path_dir, device, dtype), "state_dict"
