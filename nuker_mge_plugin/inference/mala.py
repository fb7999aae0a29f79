"""Moved: the batched MALA sampler and the seed paper's appendix-C schedule live in
:mod:`nuker_mge_plugin.sampling.mala` (the kernel in :mod:`~nuker_mge_plugin.sampling.mala_kernel`, the
result in :mod:`~nuker_mge_plugin.sampling.mala_result`, checkpoint files in
:class:`~nuker_mge_plugin.sampling.backend.ChainStore`), which is model-free.

This module re-exports the same public names, unchanged, for existing imports.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

from ..sampling.mala import (MALA, TARGET_ACCEPT, MALAResult, MALASchedule, MALAState, StepInfo, load_checkpoint_result,
                             optimal_step_size, run_mala, value_and_grad)

__all__ = ["TARGET_ACCEPT", "optimal_step_size", "value_and_grad", "MALAState", "MALA", "MALASchedule",
           "StepInfo", "MALAResult", "run_mala", "load_checkpoint_result"]
