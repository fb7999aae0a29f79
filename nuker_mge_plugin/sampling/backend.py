"""Where a sampler run keeps its draws: append-only chunk files and one atomically replaced state file.

Like emcee's backends, one object owns the storage, so that the kernels and the driver loop never
touch a file. A run with a directory survives a kill (SIGKILL included) at any instant:

    state.pt            ``torch.save`` dict (loads with ``weights_only=True``): everything needed to
                        continue (RNG state, chain state, adaptation, counters) and ``n_chunks``;
                        replaced atomically (temporary file, fsync, rename) after the chunk it counts
    chunk_000000.npz    the per-step arrays of the first block of steps, leading axis = step;
    chunk_000001.npz    the next block, ... (written once, never changed)

A chunk whose index is >= ``state["n_chunks"]`` is left over from a run killed between the two
writes; it is overwritten when the run continues. Without a directory the chunks stay in memory.
"""

import os

import numpy as np
import torch

from .._files import atomic_write

__all__ = ["ChainStore", "fingerprint_mismatch"]

STATE_FILE = "state.pt"
CHUNK_FMT = "chunk_{:06d}.npz"


def _write_synced(path, write):
    """``write(fileobj)`` into a temporary file beside ``path``, fsync, rename onto ``path``."""
    def to_tmp(tmp):
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    atomic_write(path, to_tmp)


def fingerprint_mismatch(saved, wanted):
    """Keys of ``wanted`` whose value differs in ``saved`` (a checkpoint's fingerprint dict)."""
    return [k for k in wanted if saved.get(k) != wanted[k]]


class ChainStore:
    """Storage of one run's per-step arrays and of its resumable state.

    Parameters
    ----------
    directory : str or os.PathLike, optional
        Folder of the checkpoint (created if needed). None keeps everything in memory (nothing is
        written and nothing can be resumed).

    Attributes
    ----------
    n_chunks : int
        Chunks stored so far (the count a resumed state carries).
    """

    def __init__(self, directory=None):
        self.directory = None if directory is None else os.fspath(directory)
        if self.directory is not None:
            os.makedirs(self.directory, exist_ok=True)
        self.n_chunks = 0
        self._memory = []

    # ------------------------------------------------------------------ state
    @property
    def state_path(self):
        return None if self.directory is None else os.path.join(self.directory, STATE_FILE)

    def has_state(self):
        """Whether the folder holds a saved state (always False in memory)."""
        return self.state_path is not None and os.path.exists(self.state_path)

    def load_state(self):
        """The saved state dict (tensors on the CPU); sets :attr:`n_chunks` from it."""
        if not self.has_state():
            raise ValueError(f"checkpoint_dir {self.directory!r} holds no {STATE_FILE}")
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        self.n_chunks = int(state["n_chunks"])
        return state

    def open(self, fingerprint, *, resume, seed=None):
        """Start or continue a run: the saved state to continue from, or None for a new run.

        Parameters
        ----------
        fingerprint : dict
            What must match between the run that wrote the checkpoint and this call (shapes,
            settings, format version); compared key by key.
        resume : bool
            Continue a saved run. Without it a saved run is an error (never overwritten).
        seed : int, optional
            The seed this call asks for; None accepts the checkpoint's.

        Raises
        ------
        ValueError
            A saved run without ``resume``, ``resume`` in memory, or a checkpoint that differs from
            this call (naming the keys that differ).
        """
        if self.directory is None:
            if resume:
                raise ValueError("resume=True needs a checkpoint_dir")
            return None
        if not self.has_state():
            return None
        if not resume:
            raise ValueError(f"checkpoint_dir {self.directory!r} already holds a run; pass resume=True "
                             "to continue it or choose another directory")
        state = self.load_state()
        bad = fingerprint_mismatch(state["fingerprint"], fingerprint)
        if seed is not None and state["seed"] != seed:
            bad.append("seed")
        if bad:
            raise ValueError(f"checkpoint in {self.directory!r} does not match this call: {', '.join(bad)} differ")
        return state

    def write_state(self, state):
        """Replace the saved state atomically (``n_chunks`` is added); no-op in memory."""
        if self.directory is None:
            return
        rec = dict(state, n_chunks=self.n_chunks)
        _write_synced(self.state_path, lambda f: torch.save(rec, f))

    # ------------------------------------------------------------------ chunks
    def append(self, chunk):
        """Store the next chunk: a dict of numpy arrays whose leading axis is the step."""
        if self.directory is None:
            self._memory.append(chunk)
        else:
            path = os.path.join(self.directory, CHUNK_FMT.format(self.n_chunks))
            _write_synced(path, lambda f: np.savez(f, **chunk))
        self.n_chunks += 1

    def chunk(self, k):
        """Chunk ``k`` as a dict of arrays."""
        if self.directory is None:
            return self._memory[k]
        with np.load(os.path.join(self.directory, CHUNK_FMT.format(k))) as f:
            return {key: f[key] for key in f.files}

    def chunks(self):
        """Every stored chunk, in order."""
        return [self.chunk(k) for k in range(self.n_chunks)]

    def concatenated(self):
        """All chunks joined along the step axis ({} when none is stored)."""
        chunks = self.chunks()
        if not chunks:
            return {}
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
