"""Model-free MCMC: kernels, adaptation, a checkpoint backend, one driver loop and diagnostics.

Nothing here imports the physics: a sampler sees only ``logp_and_grad(z) -> (logp, grad)``,
batched over chains, in an unconstrained space.

* kernels: :mod:`.nuts` (the No-U-Turn Sampler, batched over chains; the default of
  ``nuker-mge fit``) and :mod:`.mala` (the seed paper's Fisher-preconditioned MALA, appendix C);
* :mod:`.adaptation`: dual-averaging step size, windowed dense metric (Stan's schedule);
* :mod:`.driver`: warm-up, sampling in blocks until converged, checkpoints, for any Hamiltonian kernel;
* :mod:`.backend`: :class:`ChainStore`, the run's storage (append-only chunks, atomic state, bitwise resume);
* :mod:`.metric`: the mass matrix, validated and factored;
* :mod:`.diagnostics`: R-hat, bulk/tail ESS, MCSE, and the convergence verdict (R-hat <= 1.01, ESS >= 400).
"""

from .backend import ChainStore
from .diagnostics import ESS_MIN, RHAT_MAX, convergence, convergence_message, ess_bulk, ess_tail, rhat
from .driver import HamiltonianResult, HamiltonianSettings, run_hamiltonian
from .mala import MALA, MALAResult, MALASchedule, load_checkpoint_result, run_mala
from .metric import mass_factors
from .nuts import NUTSKernel, NUTSSettings, run_nuts

__all__ = ["ChainStore", "ESS_MIN", "RHAT_MAX", "convergence", "convergence_message", "ess_bulk", "ess_tail", "rhat",
           "HamiltonianResult", "HamiltonianSettings", "run_hamiltonian", "mass_factors", "NUTSKernel",
           "NUTSSettings", "run_nuts", "MALA", "MALAResult", "MALASchedule", "load_checkpoint_result", "run_mala"]
