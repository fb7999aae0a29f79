"""Bayesian inference core: Table-1 parameters and priors, the empirical Fisher matrix, the MAP search.

Model-independent: everything here works on any ``logp_and_grad`` / ``residual_fn`` (seed paper
appendices B-C); the forward model (:mod:`nuker_mge_plugin.model`) and the pipeline
(:mod:`nuker_mge_plugin.pipeline`) wire it in. ``inference.config``, ``.fit``, ``.forward``,
``.likelihood``, ``.plots``, ``.products`` and ``.results`` are aliases of the modules that moved
there; ``inference.mala`` re-exports :mod:`nuker_mge_plugin.sampling`'s MALA.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

from .._warnings import FitWarning
from .parameters import (DATA_RANGE_NAMES, DOMAINS, PARAMETER_NAMES, TABLE1, UNITS, BoundPileup,
                         ParameterSpace, piled_up_at_bounds)
from .fisher import (FisherResult, empirical_fisher, fisher_covariance, fisher_from_jacobian, hessian_fisher,
                     residual_jacobian, student_t_fisher_weight)
from .mala import (MALA, TARGET_ACCEPT, MALAResult, MALASchedule, MALAState, StepInfo, load_checkpoint_result,
                   optimal_step_size, run_mala, value_and_grad)

__all__ = [
    "PARAMETER_NAMES", "TABLE1", "UNITS", "DOMAINS", "DATA_RANGE_NAMES", "ParameterSpace", "BoundPileup",
    "piled_up_at_bounds",
    "FisherResult", "residual_jacobian", "fisher_from_jacobian", "fisher_covariance", "empirical_fisher",
    "hessian_fisher", "student_t_fisher_weight",
    "TARGET_ACCEPT", "optimal_step_size", "value_and_grad", "MALAState", "MALA", "MALASchedule", "StepInfo",
    "MALAResult", "run_mala", "load_checkpoint_result", "FitWarning",
]
