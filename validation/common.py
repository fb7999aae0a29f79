"""Shared pieces of the validation scripts: the docs/metrics.rst M1 draws and analytic truths (no MGE).

``spherical_nuker_vcirc_truth`` gives the exact circular velocity of a *spherical* Nuker
galaxy (qobs = 1) plus a point-mass black hole, from the Nuker surface density of the seed
paper's eq. (2) alone, by numerical quadrature (scipy.integrate.quad, epsrel 1e-11).

Abel deprojection and enclosed mass in one step
-----------------------------------------------
With rho(s) = -(1/pi) int_s^inf Sigma'(R) / sqrt(R^2 - s^2) dR (Abel) and
M(<r) = 4 pi int_0^r rho(s) s^2 ds, swapping the order of integration and integrating by parts
twice gives

    M(<r) = M2D(<r) + 4 int_r^inf R Sigma(R) [asin(r/R) - r / sqrt(R^2 - r^2)] dR,

with M2D(<r) = int_0^r 2 pi R Sigma(R) dR the projected (cylinder) mass; the second term
removes the cylinder mass outside the sphere and is negative. Substituting R = r cosh t
removes the inverse-square-root singularity at R = r:

    M(<r) = M2D(<r) + 4 r^2 int_0^inf Sigma(r cosh t) [asin(x) sqrt(1 - x^2) - x] / x^2 dt,
    x = 1 / cosh t,

where the bracket tends to -x^3/3 (evaluated by its series for small x to avoid cancellation).
The circular velocity is v_c^2 = G [M(<r) + M_BH] / r.
"""

import math
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
from scipy.integrate import quad

from nuker_mge_plugin.nuker import log_nuker

#: Gravitational constant [(km/s)^2 pc / Msun], the value used by jampy and by our vcirc.
G_KMS2_PC_PER_MSUN = 0.004301

_EPSREL = 1e-11


def draw_m1_shapes(rng, n):
    """docs/metrics.rst M1 draws from ``rng`` (numpy Generator): log10 alpha ~ U(-1, 1), gamma ~ U(0.001, 1.2),
    beta - gamma ~ U(0.3, 3.0), log10(r_b / pc) ~ U(log10 2, log10 2000). Returns (alpha, beta, gamma, r_b_pc)."""
    alpha = 10 ** rng.uniform(-1, 1, n)
    gamma = rng.uniform(0.001, 1.2, n)
    beta = gamma + rng.uniform(0.3, 3.0, n)
    r_b = 10 ** rng.uniform(math.log10(2), math.log10(2000), n)
    return alpha, beta, gamma, r_b


def draw_hard_corner_shapes(rng, n, alpha_min=3.0, r_b_min_pc=300.0):
    """The M1 draws restricted to the corner where sharp breaks meet large cores (issue 11):
    log10 alpha ~ U(log10 alpha_min, 1), log10(r_b / pc) ~ U(log10 r_b_min_pc, log10 2000), gamma and
    beta - gamma as in ``draw_m1_shapes``. Returns (alpha, beta, gamma, r_b_pc)."""
    alpha = 10 ** rng.uniform(math.log10(alpha_min), 1, n)
    gamma = rng.uniform(0.001, 1.2, n)
    beta = gamma + rng.uniform(0.3, 3.0, n)
    r_b = 10 ** rng.uniform(math.log10(r_b_min_pc), math.log10(2000), n)
    return alpha, beta, gamma, r_b


def _log_sigma(R, sigma_b, r_b, alpha, beta, gamma):
    """ln Sigma(R) of eq. (2) [Msun/pc^2] for a scalar R [pc]."""
    return float(log_nuker(R, sigma_b, r_b, alpha, beta, gamma))


def nuker_projected_mass(r_pc, sigma_b, r_b_pc, alpha, beta, gamma):
    """M2D(<r) = int_0^r 2 pi R Sigma(R) dR [Msun] of a circular Nuker (eq. 2), r in pc.

    Quadrature in ln R over [ln r - 40, ln r] plus the analytic inner power-law tail
    2 pi R_min^2 Sigma(R_min) / (2 - gamma) (needs gamma < 2).
    """
    lnr = math.log(r_pc)
    lo = lnr - 40.0
    f = lambda s: 2.0 * math.pi * math.exp(2.0 * s + _log_sigma(math.exp(s), sigma_b, r_b_pc, alpha, beta, gamma))  # noqa
    pts = [math.log(r_b_pc)] if lo < math.log(r_b_pc) < lnr else None
    body = quad(f, lo, lnr, epsabs=0, epsrel=_EPSREL, limit=400, points=pts)[0]
    r_min = math.exp(lo)
    tail = 2.0 * math.pi * r_min**2 * math.exp(_log_sigma(r_min, sigma_b, r_b_pc, alpha, beta, gamma)) / (2.0 - gamma)
    return body + tail


def _shell_bracket(x):
    """[asin(x) sqrt(1 - x^2) - x] / x^2 for 0 < x <= 1, without cancellation at small x."""
    if x < 1e-3:
        return -x / 3.0 - 2.0 * x**3 / 15.0
    return (math.asin(x) * math.sqrt(1.0 - x * x) - x) / (x * x)


def nuker_enclosed_mass_3d(r_pc, sigma_b, r_b_pc, alpha, beta, gamma):
    """Spherical enclosed mass M(<r) [Msun] of the Abel-deprojected Nuker (see module docstring)."""
    m2d = nuker_projected_mass(r_pc, sigma_b, r_b_pc, alpha, beta, gamma)

    def f(t):
        x = 1.0 / math.cosh(t)
        return math.exp(_log_sigma(r_pc * math.cosh(t), sigma_b, r_b_pc, alpha, beta, gamma)) * _shell_bracket(x)

    # Integrand ~ Sigma(r e^t / 2) e^-t: t = 60 is far beyond any Nuker of the box.
    pts = [math.acosh(r_b_pc / r_pc)] if r_b_pc > r_pc * 1.0001 else []
    edges = sorted(set([0.0] + pts + [2.0, 6.0, 15.0, 60.0]))
    corr = sum(quad(f, a, b, epsabs=0, epsrel=_EPSREL, limit=400)[0] for a, b in zip(edges[:-1], edges[1:]))
    return m2d + 4.0 * r_pc**2 * corr


def spherical_nuker_vcirc_truth(r_pc, sigma_b, r_b_pc, alpha, beta, gamma, mbh):
    """Exact v_c(r) [km/s] of a spherical Nuker (eq. 2, qobs = 1) plus a point black hole.

    Parameters: ``r_pc`` radii [pc] (scalar or array), ``sigma_b`` [Msun/pc^2], ``r_b_pc`` [pc],
    Nuker slopes ``alpha, beta, gamma`` (gamma < 2), ``mbh`` [Msun]. Returns a numpy array of
    the shape of ``r_pc``: v_c^2 = G [M(<r) + M_BH] / r with M(<r) from the Abel
    deprojection of eq. (2) done by quadrature (relative accuracy ~1e-10).
    """
    r = np.asarray(r_pc, dtype=float)
    m = np.array([nuker_enclosed_mass_3d(float(x), sigma_b, r_b_pc, alpha, beta, gamma) for x in r.ravel()])
    v2 = G_KMS2_PC_PER_MSUN * (m + mbh) / r.ravel()
    return np.sqrt(v2).reshape(r.shape)


def load_example(name):
    """A configuration shipped in ``nuker_mge_plugin/examples/`` (e.g. ``ngc4697_fit.toml``), as a dict."""
    with resources.as_file(resources.files("nuker_mge_plugin") / "examples" / name) as p:
        return tomllib.loads(Path(p).read_text())


def demo_fit_config(out):
    """The demo's fit configuration (a dict) on the demo's KinMS mock, made in ``out/obs.npz`` if absent."""
    from nuker_mge_plugin.mock import mock_from_parameters

    mock = load_example("ngc4697_mock.toml")
    obs_path = Path(out).resolve() / "obs.npz"  # absolute: the config resolves paths from its own folder
    if not obs_path.exists():
        mock_from_parameters(obs_path, mock["truth"], distance_mpc=mock["galaxy"]["distance_mpc"],
                             **mock["observation"])
    fit = load_example("ngc4697_fit.toml")
    fit["data"]["path"] = str(obs_path)
    return fit


def interleaved_timings(fns, repeats):
    """Wall times [s] of each callable in ``fns`` (name -> fn), ``repeats`` interleaved rounds each."""
    import time

    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return ts
