"""What every sampler's result shares: draws mapped to the constrained space, named columns, chain-first arrays."""

import numpy as np
import torch

__all__ = ["NamedDraws", "constrain_draws", "chains_first"]

_TRANSFORM_BATCH = 1 << 16   # rows per transform call


def constrain_draws(a, transform, dtype, device):
    """``transform`` applied to the rows of ``a`` (C, n, d) in batches -> (C, n, d'); ``a`` if None or empty."""
    if transform is None or a.shape[1] == 0:
        return a
    parts = []
    flat = a.reshape(-1, a.shape[-1])
    with torch.no_grad():
        for s in range(0, flat.shape[0], _TRANSFORM_BATCH):
            out = transform(torch.as_tensor(flat[s:s + _TRANSFORM_BATCH], dtype=dtype, device=device))
            if not isinstance(out, torch.Tensor) or out.ndim != 2:
                raise TypeError("transform must return a 2-D tensor (N, d')")
            parts.append(out.detach().cpu().numpy())
    return np.concatenate(parts).reshape(a.shape[0], a.shape[1], -1)


def chains_first(a):
    """(steps, C, ...) -> (C, steps, ...), contiguous."""
    return np.ascontiguousarray(np.swapaxes(a, 0, 1))


class NamedDraws:
    """Mixin of a result with ``samples`` (C, N, d') and ``names``: the draws by column name."""

    def _names(self, names):
        names = self.names if names is None else tuple(names)
        if names is None or len(names) != self.samples.shape[-1]:
            raise ValueError(f"names: need {self.samples.shape[-1]} column names for the samples, got "
                             f"{None if names is None else len(names)}")
        return names

    def draws(self, names=None):
        """Constrained draws as ``name -> (C, N)`` arrays (the ``draws`` of :mod:`nuker_mge_plugin.pipeline.results`).

        Parameters
        ----------
        names : sequence of str, optional
            Column names of :attr:`samples` (default :attr:`names`).

        Returns
        -------
        dict
        """
        names = self._names(names)
        return {n: np.ascontiguousarray(self.samples[..., j]) for j, n in enumerate(names)}
