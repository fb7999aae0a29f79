"""Convergence diagnostics of MCMC draws, in numpy (model-free).

* :func:`rhat`: rank-normalised split R-hat, the larger of the bulk and the folded (tail) value
  (Vehtari, Gelman, Simpson, Carpenter & Buerkner 2021, Bayesian Analysis 16, 667);
* :func:`ess_bulk`: effective sample size of the rank-normalised split chains; :func:`ess_tail`:
  the smaller of the ESS of the 5% and 95% quantile indicators (same paper), each with Geyer's
  initial-monotone-sequence truncation of the autocorrelations;
* :func:`mcse_mean`, :func:`mcse_quantile`: Monte Carlo standard errors of a mean and of a
  quantile (the latter by the indicator-ESS interval of Vehtari et al. 2021, section 4.3);
* :func:`convergence`: the verdict a fit reports, with the thresholds careful users apply
  (R-hat <= 1.01, bulk and tail ESS >= 400 for every parameter: Vehtari et al. 2021, and Stan's).

Written here rather than taken from ArviZ so that the definitions do not change with its version;
tests/test_inference_results.py checks them against ArviZ 0.23.
"""

import math

import numpy as np
from scipy import stats
from scipy.fft import next_fast_len

__all__ = ["RHAT_MAX", "ESS_MIN", "rhat", "ess_bulk", "ess_tail", "mcse_mean", "mcse_quantile", "convergence",
           "convergence_message"]

#: Largest R-hat of a converged fit (Vehtari et al. 2021).
RHAT_MAX = 1.01
#: Smallest bulk and tail ESS of a converged fit (Vehtari et al. 2021: 100 per chain for 4 chains).
ESS_MIN = 400.0


def _split(x):
    """(chains, n) -> (2 chains, n // 2): each chain's first and last halves (middle draw dropped if n odd)."""
    h = x.shape[1] // 2
    return np.concatenate([x[:, :h], x[:, x.shape[1] - h:]], axis=0)


def _rank_normal(x):
    """Rank-normalised draws: Phi^-1((r - 3/8) / (S + 1/4)), r the pooled average rank, S the count."""
    r = stats.rankdata(x, axis=None).reshape(x.shape)
    return stats.norm.ppf((r - 0.375) / (x.size + 0.25))


def _rhat_plain(x):
    """Gelman-Rubin potential scale reduction of (chains, n) draws."""
    n = x.shape[1]
    w = x.var(axis=1, ddof=1).mean()
    if not w > 0:
        return math.nan
    b = n * x.mean(axis=1).var(ddof=1)
    return math.sqrt(((n - 1) / n * w + b / n) / w)


def rhat(x):
    """Rank-normalised split R-hat of (chains, draws) draws: max of the bulk and folded values (NaN if constant)."""
    x = np.asarray(x, dtype=np.float64)
    xs = _split(x)
    bulk = _rhat_plain(_rank_normal(xs))
    tail = _rhat_plain(_rank_normal(np.abs(xs - np.median(xs))))  # folded about the median
    return max(bulk, tail) if not (math.isnan(bulk) or math.isnan(tail)) else math.nan


def _ess(x):
    """Effective sample size of (chains, n) draws (multi-chain autocorrelation, Geyer truncation)."""
    m, n = x.shape
    xc = x - x.mean(axis=1, keepdims=True)
    nfft = next_fast_len(2 * n)
    f = np.fft.rfft(xc, nfft, axis=1)
    acov = np.fft.irfft(f * np.conj(f), nfft, axis=1)[:, :n] / n  # biased autocovariance per chain
    w = acov[:, 0].mean() * n / (n - 1.0)  # mean within-chain variance (unbiased)
    var_plus = w * (n - 1.0) / n + (x.mean(axis=1).var(ddof=1) if m > 1 else 0.0)
    if not var_plus > 0:
        return math.nan
    rho = 1.0 - (w - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    # Geyer: sums of adjacent pairs P_j = rho_2j + rho_2j+1 are positive and decreasing for a
    # reversible chain. Keep the pairs before the first non-positive one (or before the last
    # available one, j_max, if none is), force them to decrease, and add the first member of the
    # pair that ended the sequence when it is positive (Stan's and ArviZ's convention).
    j_max = (n - 3) // 2
    pairs = rho[0:2 * j_max + 1:2] + rho[1:2 * j_max + 2:2]
    neg = np.flatnonzero(pairs[1:] <= 0)
    k = neg[0] + 1 if neg.size else j_max
    tau = -1.0 + 2.0 * np.minimum.accumulate(pairs[:k]).sum()
    if rho[2 * k] > 0:
        tau += rho[2 * k]
    tau = max(tau, 1.0 / math.log10(m * n))  # antithetic chains: cap the ESS (as Stan does)
    return m * n / tau


def ess_bulk(x):
    """Bulk effective sample size of (chains, draws) draws (rank-normalised split chains)."""
    return _ess(_rank_normal(_split(np.asarray(x, dtype=np.float64))))


def ess_tail(x):
    """Tail effective sample size: the smaller ESS of the 5% and 95% quantile indicators (split chains)."""
    x = np.asarray(x, dtype=np.float64)
    out = []
    for q in (0.05, 0.95):
        ind = (x <= np.quantile(x, q)).astype(np.float64)
        out.append(_ess(_split(ind)))
    return math.nan if any(math.isnan(v) for v in out) else min(out)


def mcse_mean(x):
    """Monte Carlo standard error of the mean of (chains, draws) draws: ``sd / sqrt(ESS)`` (plain, not split)."""
    x = np.asarray(x, dtype=np.float64)
    ess = _ess(_split(x))
    return math.nan if math.isnan(ess) else float(x.std(ddof=1) / math.sqrt(ess))


def mcse_quantile(x, prob):
    """Monte Carlo standard error of the ``prob`` quantile of (chains, draws) draws.

    The interval of the quantile from the ESS of its indicator (Vehtari et al. 2021, sec. 4.3):
    the draws' order statistics at ``S (p -+ sqrt(p (1 - p) / ESS))``, half their distance.
    """
    x = np.asarray(x, dtype=np.float64)
    ind = (x <= np.quantile(x, prob)).astype(np.float64)
    ess = _ess(_split(ind))
    if math.isnan(ess):
        return math.nan
    s = np.sort(x.ravel())
    sd = math.sqrt(prob * (1.0 - prob) / ess)
    lo = int(np.clip(math.floor((prob - sd) * s.size), 0, s.size - 1))
    hi = int(np.clip(math.ceil((prob + sd) * s.size), 0, s.size - 1))
    return float((s[hi] - s[lo]) / 2.0)


def convergence(draws, *, rhat_max=RHAT_MAX, ess_min=ESS_MIN):
    """Whether the chains have converged, parameter by parameter.

    Parameters
    ----------
    draws : mapping name -> (chains, draws) array
        Posterior draws of every free parameter (any units: the diagnostics are rank-based).
    rhat_max : float
        Largest R-hat allowed (default 1.01).
    ess_min : float
        Smallest bulk and tail ESS allowed (default 400).

    Returns
    -------
    dict
        ``converged`` (bool), ``r_hat``, ``ess_bulk``, ``ess_tail`` ({name: float}), ``failing``
        (names that miss a threshold, worst R-hat first), ``max_r_hat``, ``min_ess_bulk``,
        ``min_ess_tail``, ``criteria`` (text). A constant parameter (NaN R-hat) never counts as
        converged.
    """
    rh = {k: rhat(v) for k, v in draws.items()}
    eb = {k: ess_bulk(v) for k, v in draws.items()}
    et = {k: ess_tail(v) for k, v in draws.items()}

    def bad(k):
        return not (rh[k] <= rhat_max and eb[k] >= ess_min and et[k] >= ess_min)  # NaN compares False
    failing = sorted((k for k in draws if bad(k)), key=lambda k: -(math.inf if math.isnan(rh[k]) else rh[k]))
    finite = lambda d, f: f(v for v in d.values() if not math.isnan(v)) if any(  # noqa: E731
        not math.isnan(v) for v in d.values()) else math.nan
    return dict(converged=not failing, r_hat=rh, ess_bulk=eb, ess_tail=et, failing=failing,
                max_r_hat=finite(rh, max), min_ess_bulk=finite(eb, min), min_ess_tail=finite(et, min),
                criteria=f"r_hat <= {rhat_max:g} and ess_bulk, ess_tail >= {ess_min:g} for every parameter")


def convergence_message(report, n_worst=3):
    """One ``warning:`` line naming the worst parameters of an unconverged :func:`convergence` report
    (None when converged)."""
    if report["converged"]:
        return None
    parts = [f"{k} (R-hat {report['r_hat'][k]:.3f}, ESS bulk {report['ess_bulk'][k]:.0f} / tail "
             f"{report['ess_tail'][k]:.0f})" for k in report["failing"][:n_worst]]
    more = len(report["failing"]) - n_worst
    return ("warning: the chains have NOT converged (" + report["criteria"] + "); worst: " + ", ".join(parts)
            + (f" and {more} more" if more > 0 else "") + ". Do not quote these intervals; sample longer "
            "(sampler.max_wall_s, sampler.max_draws) or reparametrise.")
