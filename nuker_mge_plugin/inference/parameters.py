"""The 15 model parameters of the seed paper's Table 1 (Appendix B), their uniform priors, and the
bijection to the unconstrained space the sampler works in.

Parameters, units and the Table-1 prior ranges (``TABLE1``):

====================  ======================  ==================  ===================================
name                  unit                    Table-1 range       physical domain (for fixed values)
====================  ======================  ==================  ===================================
``scale_length``      arcsec                  (0, 10)             > 0
``log10_mbh``         log10 Msun              (6.0, 9.79934)      finite
``inclination``       deg (0 = face-on)       (72, 89)            (0, 90)
``qintr``             --                      (0.1, 1.0)          (0, 1]
``alpha``             --                      (0.1, 10)           > 0
``gamma_minus_beta``  --                      (-3.0, -0.3)        < 0 (beta > gamma)
``gamma``             --                      (0.001, 1.2)        [0, 2)
``break_r``           arcsec                  (0.41, 5.0)         > 0
``intensity_rb``      log10 Msun/pc^2         (1, 5)              finite
``pa``                deg                     (0, 359.9)          finite
``line_broadening``   km/s                    (0.1, 30)           > 0
``systemic_velocity`` km/s                    (1220, 1260)        finite
``x``                 arcsec                  (-1, 1)             finite
``y``                 arcsec                  (-1, 1)             finite
``flux``              Jy km/s                 (1, 50)             > 0
====================  ======================  ==================  ===================================

``systemic_velocity``, ``x`` and ``y`` are NGC 4697's values in Table 1; for other data the caller
passes data-derived default ranges (``data_ranges=``), e.g. the band centre +- 20 km/s and the
phase centre +- 1 arcsec.

Bijection. Each free parameter with prior U(low, high) is written
``theta = low + (high - low) * sigmoid(z)``, ``z`` real. Its log-Jacobian is
``log|dtheta/dz| = log(high - low) + log sigmoid(z) + log sigmoid(-z)``, so the uniform prior in
``theta`` becomes a standard logistic density in ``z`` (``log p(z) = -softplus(z) - softplus(-z)``):
finite and smooth everywhere, which a gradient-based sampler (seed paper appendix C) needs.

How a posterior piled up at a bound shows. A parameter the data push against one end of its prior
range has its constrained draws crowded into the last percent of the range (a marginal histogram
that rises against the edge instead of falling to zero), and its unconstrained draws wander to large
``|z|`` (``|z| > 4.6`` is the last 1% of the range), where ``dtheta/dz -> 0``: the likelihood
loses curvature in ``z``, the Fisher mass matrix grows in that direction and only the logistic prior
term holds the chain back, so its trace shows long slow excursions. :func:`piled_up_at_bounds`
reports, from posterior draws, the parameters with at least ``min_fraction`` of their draws within
``width`` (1%) of the range of a bound; for a posterior that is flat across the whole prior range
that fraction is ``width`` itself, so the default ``min_fraction = 0.05`` flags five times that.
Such a result means the prior range, not the data, sets that parameter's interval: quote it as a
limit or widen the range if physics allows.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).

Its length (~650 lines) is the Table-1 ranges, units and physical domains with the bijection, its
log-Jacobian and their checks: one parameter vocabulary that everything above imports.
"""

from __future__ import annotations

import math
import numbers
from collections import namedtuple
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PARAMETER_NAMES", "EXTRA_PARAMETER_NAMES", "TABLE1", "UNITS", "DOMAINS", "DATA_RANGE_NAMES",
           "ParameterSpace", "BoundPileup", "bound_pileup_sides", "piled_up_at_bounds"]

#: The 15 parameter names, in the canonical (Table-1) order.
PARAMETER_NAMES = ("scale_length", "log10_mbh", "inclination", "qintr", "alpha", "gamma_minus_beta",
                   "gamma", "break_r", "intensity_rb", "pa", "line_broadening", "systemic_velocity",
                   "x", "y", "flux")

#: Table-1 uniform prior ranges (low, high), in the units of :data:`UNITS`.
TABLE1 = {
    "scale_length": (0.0, 10.0),
    "log10_mbh": (6.0, 9.79934),
    "inclination": (72.0, 89.0),
    "qintr": (0.1, 1.0),
    "alpha": (0.1, 10.0),
    "gamma_minus_beta": (-3.0, -0.3),
    "gamma": (0.001, 1.2),
    "break_r": (0.41, 5.0),
    "intensity_rb": (1.0, 5.0),
    "pa": (0.0, 359.9),
    "line_broadening": (0.1, 30.0),
    "systemic_velocity": (1220.0, 1260.0),
    "x": (-1.0, 1.0),
    "y": (-1.0, 1.0),
    "flux": (1.0, 50.0),
}

#: Units of each parameter.
UNITS = {
    "scale_length": "arcsec", "log10_mbh": "log10 Msun", "inclination": "deg", "qintr": "",
    "alpha": "", "gamma_minus_beta": "", "gamma": "", "break_r": "arcsec",
    "intensity_rb": "log10 Msun/pc^2", "pa": "deg", "line_broadening": "km/s",
    "systemic_velocity": "km/s", "x": "arcsec", "y": "arcsec", "flux": "Jy km/s",
}

#: Physical domain of each parameter: (low, high, low_closed, high_closed). A fixed value must lie
#: inside it; a prior range must lie inside its closure (the bijection never reaches the ends).
_INF = math.inf
DOMAINS = {
    "scale_length": (0.0, _INF, False, False),
    "log10_mbh": (-_INF, _INF, False, False),
    "inclination": (0.0, 90.0, False, False),
    "qintr": (0.0, 1.0, False, True),
    "alpha": (0.0, _INF, False, False),
    "gamma_minus_beta": (-_INF, 0.0, False, False),
    "gamma": (0.0, 2.0, True, False),
    "break_r": (0.0, _INF, False, False),
    "intensity_rb": (-_INF, _INF, False, False),
    "pa": (-_INF, _INF, False, False),
    "line_broadening": (0.0, _INF, False, False),
    "systemic_velocity": (-_INF, _INF, False, False),
    "x": (-_INF, _INF, False, False),
    "y": (-_INF, _INF, False, False),
    "flux": (0.0, _INF, False, False),
}

#: Parameters beyond Table 1, present only when a fit's ``spec`` names them: ``ring_radius``
#: [arcsec], the radius of the Gaussian ring of gas (``[model] surface_brightness = "ring"``,
#: whose Gaussian dispersion is then ``scale_length``).
EXTRA_PARAMETER_NAMES = ("ring_radius",)
UNITS["ring_radius"] = "arcsec"
DOMAINS["ring_radius"] = (0.0, _INF, True, False)

#: Parameters whose default range the caller may replace by a data-derived one.
DATA_RANGE_NAMES = ("systemic_velocity", "x", "y")


def _domain_text(name):
    lo, hi, lc, hc = DOMAINS[name]
    if lo == -_INF and hi == _INF:
        return "finite"
    if hi == _INF:
        return (">= " if lc else "> ") + f"{lo:g}"
    if lo == -_INF:
        return ("<= " if hc else "< ") + f"{hi:g}"
    return ("[" if lc else "(") + f"{lo:g}, {hi:g}" + ("]" if hc else ")")


def _in_domain(name, v):
    lo, hi, lc, hc = DOMAINS[name]
    if not math.isfinite(v):
        return False
    ok_lo = v >= lo if lc else v > lo
    ok_hi = v <= hi if hc else v < hi
    return ok_lo and ok_hi


def _as_number(name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__} {v!r}")
    return float(v)


def _parse_entry(name, entry, where):
    """(low, high) tuple or a float (fixed) from a user entry; raises naming ``name``."""
    if isinstance(entry, Mapping):
        keys = set(entry)
        if keys == {"low", "high"}:
            entry = (entry["low"], entry["high"])
        elif keys == {"fixed"}:
            entry = entry["fixed"]
        else:
            raise ValueError(f"{where}{name}: a mapping entry must have keys {{'low', 'high'}} or "
                             f"{{'fixed'}}, got {sorted(keys)}")
    if isinstance(entry, (str, bytes)):
        raise TypeError(f"{where}{name}: expected (low, high) or a number, got the string {entry!r}")
    if isinstance(entry, (Sequence, np.ndarray)) and not isinstance(entry, numbers.Real):
        if len(entry) != 2:
            raise ValueError(f"{where}{name}: a prior range needs exactly 2 values (low, high), "
                             f"got {len(entry)}")
        lo, hi = (_as_number(name, v) for v in entry)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{where}{name}: prior range ({lo:g}, {hi:g}) must be finite")
        if not lo < hi:
            raise ValueError(f"{where}{name}: prior range needs low < high, got ({lo:g}, {hi:g})")
        dlo, dhi, _, _ = DOMAINS[name]
        if lo < dlo or hi > dhi:
            raise ValueError(f"{where}{name}: prior range ({lo:g}, {hi:g}) [{UNITS[name] or 'dimensionless'}] "
                             f"leaves the physical domain {_domain_text(name)}")
        return (lo, hi)
    v = _as_number(name, entry)
    if not _in_domain(name, v):
        raise ValueError(f"{where}{name}: fixed value {v:g} [{UNITS[name] or 'dimensionless'}] is outside "
                         f"the physical domain {_domain_text(name)}")
    return v


BoundPileup = namedtuple("BoundPileup", ["name", "side", "bound", "fraction"])
BoundPileup.__doc__ = """A free parameter whose draws pile up at a bound of its prior range.

name : parameter name; side : ``"low"`` or ``"high"``; bound : the bound's value [parameter unit];
fraction : fraction of draws within ``width`` (relative to the range) of that bound.
"""


class ParameterSpace:
    """Free and fixed parameters with uniform priors, and the sigmoid bijection to ``R^n_free``.

    Parameters
    ----------
    spec : mapping, optional
        ``name -> (low, high)`` for a free parameter with prior U(low, high), or ``name -> number``
        to fix it (units: :data:`UNITS`). Mapping entries ``{"low": .., "high": ..}`` and
        ``{"fixed": ..}`` are accepted too (TOML tables). Names not given keep their default range.
    data_ranges : mapping, optional
        Data-derived default ranges ``name -> (low, high)`` for ``systemic_velocity`` [km/s], ``x``,
        ``y`` [arcsec] only; they replace Table 1's NGC 4697 values, and ``spec`` overrides them.
    dtype : torch.dtype
        Floating dtype of tensors this object creates (default float64). Methods taking tensors
        compute in the dtype and on the device of their argument.

    Raises
    ------
    ValueError
        One line naming the parameter: unknown name, ``low >= high``, a non-finite bound, a range
        outside the physical domain, or a fixed value outside it (e.g. ``gamma_minus_beta`` must be
        < 0, ``qintr`` in (0, 1], ``inclination`` in (0, 90), ``scale_length``, ``break_r`` > 0).
    TypeError
        An entry that is neither a number nor a (low, high) pair.

    Attributes
    ----------
    names : tuple of str
        All 15 names in canonical order (:data:`PARAMETER_NAMES`), then those of
        :data:`EXTRA_PARAMETER_NAMES` that ``spec`` gives.
    free_names : tuple of str
        The free parameters, in canonical order: the column order of ``z`` and ``theta``.
    fixed : dict
        ``name -> value`` of the fixed parameters.
    bounds : dict
        ``name -> (low, high)`` of the free parameters.
    n_free : int
        Number of free parameters ``d``.
    """

    def __init__(self, spec=None, *, data_ranges=None, dtype=torch.float64):
        spec = {} if spec is None else spec
        data_ranges = {} if data_ranges is None else data_ranges
        if not isinstance(spec, Mapping):
            raise TypeError(f"spec: expected a mapping name -> (low, high) or number, got {type(spec).__name__}")
        if not isinstance(data_ranges, Mapping):
            raise TypeError(f"data_ranges: expected a mapping name -> (low, high), got {type(data_ranges).__name__}")
        for name in list(spec) + list(data_ranges):
            if name not in TABLE1 and name not in EXTRA_PARAMETER_NAMES:
                raise ValueError(f"unknown parameter {name!r}; known: "
                                 f"{', '.join(PARAMETER_NAMES + EXTRA_PARAMETER_NAMES)}")
        entries = dict(TABLE1)
        for name, entry in data_ranges.items():
            if name not in DATA_RANGE_NAMES:
                raise ValueError(f"data_ranges: {name!r} has no data-derived default; only "
                                 f"{', '.join(DATA_RANGE_NAMES)} do (use spec to change it)")
            entry = _parse_entry(name, entry, "data_ranges: ")
            if not isinstance(entry, tuple):
                raise ValueError(f"data_ranges: {name} needs a (low, high) range, got {entry:g}")
            entries[name] = entry
        for name, entry in spec.items():
            entries[name] = _parse_entry(name, entry, "")
        self.dtype = dtype
        self.names = PARAMETER_NAMES + tuple(n for n in EXTRA_PARAMETER_NAMES if n in entries)
        self.free_names = tuple(n for n in self.names if isinstance(entries[n], tuple))
        self.fixed = {n: entries[n] for n in self.names if not isinstance(entries[n], tuple)}
        self.bounds = {n: entries[n] for n in self.free_names}
        self.n_free = len(self.free_names)
        self._low = torch.tensor([self.bounds[n][0] for n in self.free_names], dtype=torch.float64)
        self._high = torch.tensor([self.bounds[n][1] for n in self.free_names], dtype=torch.float64)
        self._cache = {}

    # ------------------------------------------------------------------ helpers
    def __repr__(self):
        free = ", ".join(f"{n}=({lo:g}, {hi:g})" for n, (lo, hi) in self.bounds.items())
        fixed = ", ".join(f"{n}={v:g}" for n, v in self.fixed.items())
        return f"ParameterSpace(free: {free}; fixed: {fixed or 'none'})"

    def _lh(self, ref):
        """(low, high, log width) on ``ref``'s dtype/device, cached so a CUDA loop copies them once."""
        key = (ref.dtype, ref.device)
        if key not in self._cache:
            lo = self._low.to(dtype=ref.dtype, device=ref.device)
            hi = self._high.to(dtype=ref.dtype, device=ref.device)
            self._cache[key] = (lo, hi, torch.log(hi - lo))
        return self._cache[key]

    def _check_last(self, t, what):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}: expected a torch.Tensor of shape (B, {self.n_free}), got {type(t).__name__}")
        if t.ndim < 1 or t.shape[-1] != self.n_free:
            raise ValueError(f"{what}: expected shape (B, {self.n_free}) (one column per free parameter "
                             f"{self.free_names}), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{what}: expected a floating-point tensor, got {t.dtype}")

    @property
    def low(self):
        """Lower prior bounds of the free parameters, (n_free,) float64 [parameter units]."""
        return self._low.clone()

    @property
    def high(self):
        """Upper prior bounds of the free parameters, (n_free,) float64 [parameter units]."""
        return self._high.clone()

    def index(self, name):
        """Column of free parameter ``name`` in ``z`` / ``theta`` (ValueError if unknown or fixed)."""
        if name not in self.names:
            raise ValueError(f"unknown parameter {name!r}; known: {', '.join(self.names)}")
        if name not in self.bounds:
            raise ValueError(f"{name} is fixed at {self.fixed[name]:g}; it has no column")
        return self.free_names.index(name)

    # ------------------------------------------------------------------ bijection
    def constrain(self, z):
        """Map unconstrained ``z`` to constrained values ``theta = low + (high - low) sigmoid(z)``.

        Parameters
        ----------
        z : torch.Tensor, shape (B, n_free)
            Unconstrained coordinates, columns in :attr:`free_names` order (any leading shape works).

        Returns
        -------
        theta : torch.Tensor, shape (B, n_free)
            Free parameter values in their units (:data:`UNITS`), inside [low, high].
        """
        self._check_last(z, "z")
        lo, hi, _ = self._lh(z)
        w = hi - lo
        # Measure from the nearer bound: near ``high``, 1 - sigmoid(z) would lose digits.
        return torch.where(z > 0, hi - w * torch.sigmoid(-z), lo + w * torch.sigmoid(z))

    def log_abs_det_jacobian(self, z):
        """``log|det dtheta/dz|`` of :meth:`constrain` (the map is diagonal).

        Parameters
        ----------
        z : torch.Tensor, shape (B, n_free)

        Returns
        -------
        torch.Tensor, shape (B,)
            ``sum_j [log(high_j - low_j) - softplus(z_j) - softplus(-z_j)]`` [log of parameter units].
        """
        self._check_last(z, "z")
        _, _, logw = self._lh(z)
        # log sigmoid(z) + log sigmoid(-z) = -softplus(-z) - softplus(z): no overflow at any |z|.
        return (logw - F.softplus(z) - F.softplus(-z)).sum(-1)

    def constrain_with_logdet(self, z):
        """``(constrain(z), log_abs_det_jacobian(z))``: theta (B, n_free) and log|J| (B,)."""
        return self.constrain(z), self.log_abs_det_jacobian(z)

    def unconstrain(self, theta, *, check=True):
        """Inverse of :meth:`constrain`: ``z = logit((theta - low) / (high - low))``.

        Parameters
        ----------
        theta : torch.Tensor, shape (B, n_free)
            Free parameter values [parameter units].
        check : bool
            Raise ``ValueError`` naming the first parameter whose value is not strictly inside
            (low, high) (there ``z`` would be infinite or NaN). Costs one host synchronisation.

        Returns
        -------
        z : torch.Tensor, shape (B, n_free)
        """
        self._check_last(theta, "theta")
        lo, hi, _ = self._lh(theta)
        u = (theta - lo) / (hi - lo)
        if check:
            bad = ~((u > 0) & (u < 1))
            if bool(bad.any()):
                j = int(bad.reshape(-1, self.n_free).any(0).nonzero()[0])
                v = theta.reshape(-1, self.n_free)[:, j][bad.reshape(-1, self.n_free)[:, j]][0]
                n = self.free_names[j]
                raise ValueError(f"{n} = {float(v):g} [{UNITS[n] or 'dimensionless'}] must lie strictly inside "
                                 f"its prior range ({self.bounds[n][0]:g}, {self.bounds[n][1]:g})")
        # logit(u) from the distances to both bounds: accurate at either end of the range.
        return torch.log(theta - lo) - torch.log(hi - theta)

    # ------------------------------------------------------------------ dicts
    def to_dict(self, theta):
        """All 15 parameters as a dict of tensors, fixed ones broadcast.

        Parameters
        ----------
        theta : torch.Tensor, shape (B, n_free)
            Constrained free values (from :meth:`constrain`).

        Returns
        -------
        dict
            ``name -> tensor (B,)`` for every name in :attr:`names` (units: :data:`UNITS`);
            free columns are views of ``theta`` (gradients flow), fixed ones constants.
        """
        self._check_last(theta, "theta")
        batch = theta.shape[:-1]
        out = {}
        for name in self.names:
            if name in self.bounds:
                out[name] = theta[..., self.free_names.index(name)]
            else:
                out[name] = torch.full(batch, self.fixed[name], dtype=theta.dtype, device=theta.device)
        return out

    def from_dict(self, values, *, dtype=None, device=None):
        """Stack the free parameters of ``values`` (name -> scalar or (B,)) into theta (B, n_free).

        Fixed parameters in ``values`` are ignored; missing free ones raise ``ValueError``.
        Returns a tensor of ``dtype`` (default :attr:`dtype`) with at least one batch dimension.
        """
        missing = [n for n in self.free_names if n not in values]
        if missing:
            raise ValueError(f"values: missing free parameter(s) {', '.join(missing)}")
        unknown = [n for n in values if n not in TABLE1 and n not in EXTRA_PARAMETER_NAMES]
        if unknown:
            raise ValueError(f"values: unknown parameter(s) {', '.join(map(repr, unknown))}")
        dtype = self.dtype if dtype is None else dtype
        cols = [torch.as_tensor(values[n], dtype=dtype, device=device) for n in self.free_names]
        theta = torch.stack(torch.broadcast_tensors(*cols), -1)
        return theta.reshape(1, self.n_free) if theta.ndim == 1 else theta

    def unconstrained_dict(self, z):
        """Shortcut: ``to_dict(constrain(z))``; z (B, n_free) -> dict name -> (B,)."""
        return self.to_dict(self.constrain(z))

    def log_posterior_unconstrained(self, log_likelihood):
        """Build the sampler's target from a log-likelihood of the 15 named parameters.

        Parameters
        ----------
        log_likelihood : callable
            ``log_likelihood(params) -> (B,)`` natural-log likelihood, ``params`` the dict of
            :meth:`to_dict` (name -> (B,) tensors in :data:`UNITS`).

        Returns
        -------
        callable
            ``z (B, n_free) -> log_likelihood(to_dict(constrain(z))) + log_prior_unconstrained(z)``
            (B,): the log-posterior density of ``z``; wrap it with
            :func:`~.mala.value_and_grad` for :func:`~.mala.run_mala`.
        """
        if not callable(log_likelihood):
            raise TypeError("log_likelihood must be callable: dict name -> (B,) tensors -> (B,)")

        def logp(z):
            return log_likelihood(self.to_dict(self.constrain(z))) + self.log_prior_unconstrained(z)

        return logp

    # ------------------------------------------------------------------ densities
    def log_prior(self, theta):
        """Log prior density in the constrained space (product of uniforms).

        Parameters
        ----------
        theta : torch.Tensor, shape (B, n_free)
            Constrained values [parameter units].

        Returns
        -------
        torch.Tensor, shape (B,)
            ``-sum_j log(high_j - low_j)`` where every ``low_j <= theta_j <= high_j``, ``-inf``
            elsewhere (also for NaN) [log of 1/parameter units].
        """
        self._check_last(theta, "theta")
        lo, hi, logw = self._lh(theta)
        inside = ((theta >= lo) & (theta <= hi)).all(-1)
        const = -logw.sum()
        return torch.where(inside, const.expand(inside.shape),
                           torch.full_like(const, -math.inf).expand(inside.shape))

    def log_prior_unconstrained(self, z):
        """Log prior density of ``z`` (the pushed-back uniform): ``log_prior(constrain(z)) + log|J|``.

        Computed directly as the logistic density ``sum_j [-softplus(z_j) - softplus(-z_j)]``, finite
        for every finite ``z``. Add it to the log-likelihood at ``constrain(z)`` to get the
        log-posterior in ``z`` that the sampler needs.

        Parameters
        ----------
        z : torch.Tensor, shape (B, n_free)

        Returns
        -------
        torch.Tensor, shape (B,)
        """
        self._check_last(z, "z")
        return (-F.softplus(z) - F.softplus(-z)).sum(-1)

    def prior_precision_unconstrained(self, z):
        """Curvature ``-d^2 log p(z) / dz_j^2 = 2 sigmoid(z_j) sigmoid(-z_j)`` of the logistic prior.

        Useful as ``prior_precision`` of :func:`~.fisher.fisher_covariance`: in a direction the
        data do not constrain the mass matrix then gets the prior's own scale (variance ~2 in ``z``
        near ``z = 0``) instead of the ridge's ``1 / lambda``.

        Parameters
        ----------
        z : torch.Tensor, shape (n_free,) or (B, n_free)

        Returns
        -------
        torch.Tensor, same shape as ``z``; values in (0, 0.5].
        """
        self._check_last(z, "z")
        return 2.0 * torch.sigmoid(z) * torch.sigmoid(-z)

    def sample_prior(self, n, generator=None, *, device=None, unconstrained=False):
        """Seeded draws from the prior.

        Parameters
        ----------
        n : int
            Number of draws.
        generator : torch.Generator or int, optional
            Random stream; an int seeds a fresh CPU ``torch.Generator``. Pass one Generator to
            successive calls for independent draws (re-seeding with the same int repeats them).
        device : torch.device, optional
            Device of the result (the draws are made on the generator's device, then moved).
        unconstrained : bool
            Return ``z = unconstrain(theta)`` instead of theta.

        Returns
        -------
        torch.Tensor, shape (n, n_free), dtype :attr:`dtype`
            Uniform draws strictly inside (low, high) [parameter units], or their ``z``.
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n: number of draws must be an integer >= 1, got {n!r}")
        if generator is None or isinstance(generator, numbers.Integral):
            seed = generator
            generator = torch.Generator()
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(int(seed))
        elif not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or an int seed, got {type(generator).__name__}")
        u = torch.rand((int(n), self.n_free), generator=generator, dtype=self.dtype, device=generator.device)
        # torch.rand is in [0, 1): nudge an exact 0 inside so that unconstrain stays finite.
        tiny = torch.finfo(self.dtype).tiny
        u = u.clamp(min=tiny)
        lo, hi, _ = self._lh(u)
        theta = lo + (hi - lo) * u
        z = torch.log(u) - torch.log1p(-u)
        out = z if unconstrained else theta
        return out.to(device) if device is not None else out

    # ------------------------------------------------------------------ diagnostics
    def piled_up_at_bounds(self, samples, *, min_fraction=0.05, width=0.01):
        """Free parameters whose draws pile up at a prior bound; see :func:`piled_up_at_bounds`.

        ``samples``: constrained draws, array/tensor (..., n_free) in :attr:`free_names` order, or a
        mapping ``name -> array`` (e.g. an ArviZ posterior's variables).
        """
        if isinstance(samples, Mapping):
            named = {n: samples[n] for n in self.free_names if n in samples}
        else:
            arr = np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples, float)
            if arr.ndim < 1 or arr.shape[-1] != self.n_free:
                raise ValueError(f"samples: expected shape (..., {self.n_free}) in free_names order, "
                                 f"got {arr.shape}")
            named = {n: arr[..., j] for j, n in enumerate(self.free_names)}
        return piled_up_at_bounds(named, {n: self.bounds[n] for n in named},
                                  min_fraction=min_fraction, width=width)


def bound_pileup_sides(x, low, high, *, density_ratio=0.5, min_excess=2.0, width=0.01):
    """The sides of ``[low, high]`` against which the draws ``x`` pile up: the package's one criterion.

    A side is flagged when the marginal density right at the bound does not fall off (at least
    ``density_ratio`` of the marginal's peak) and exceeds a flat posterior's density over the
    prior range ``min_excess`` times: a posterior cut off by the prior, not a broad one filling
    it. Densities are counts in bins of width ``h = min(width (high - low), 0.2 s)``, ``s`` half
    the 16-84% range of the draws; at least 10 draws must lie within ``h`` of the bound.

    Parameters
    ----------
    x : array_like
        Constrained draws of one parameter, any shape [parameter unit]; non-finite ones are ignored.
    low, high : float
        Its prior range [parameter unit].
    density_ratio, min_excess, width : float
        The thresholds above (defaults 0.5, 2, 0.01).

    Returns
    -------
    list of dict
        ``{"side": "low" | "high", "bound": float, "density_ratio": float, "fraction": float}`` per
        flagged side, ``fraction`` the fraction of draws within ``width (high - low)`` of the bound.
    """
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=float).ravel()
    x = x[np.isfinite(x)]
    lo, hi = float(low), float(high)
    if x.size == 0:
        return []
    q16, q84 = np.percentile(x, [16, 84])
    s = 0.5 * (q84 - q16)
    h = min(width * (hi - lo), 0.2 * s) if s > 0 else width * (hi - lo)
    # peak density at the same resolution, over the central 99% so that outliers add no bins
    a0, a1 = np.percentile(x, [0.5, 99.5])
    nb = int(min(max((a1 - a0) / h, 1), 2000))
    counts, _ = np.histogram(x, bins=nb, range=(a0, a1 if a1 > a0 else a0 + h))
    peak = counts.max() / (x.size * (a1 - a0 if a1 > a0 else h) / nb)
    flat = 1.0 / (hi - lo)
    tol = width * (hi - lo)
    flags = []
    for side, b, near, within in (("low", lo, x <= lo + h, x <= lo + tol), ("high", hi, x >= hi - h, x >= hi - tol)):
        cnt = int(near.sum())
        dens = cnt / (x.size * h)
        if cnt >= 10 and dens >= density_ratio * peak and dens >= min_excess * flat:
            flags.append(dict(side=side, bound=b, density_ratio=float(dens / peak), fraction=float(np.mean(within))))
    return flags


def piled_up_at_bounds(samples, bounds, *, min_fraction=0.05, width=0.01):
    """Report the parameters whose draws pile up at a bound (:func:`bound_pileup_sides`).

    A side is reported when :func:`bound_pileup_sides` flags it (the criterion the fit's summary
    uses) and at least ``min_fraction`` of the draws lie within ``width`` of it: a draw is "at" the
    low bound if ``theta <= low + width (high - low)`` (likewise for high). A posterior flat over the
    whole range is never flagged; see the module docstring for how a piled-up posterior shows.

    Parameters
    ----------
    samples : mapping
        ``name -> array-like`` of constrained draws, any shape (e.g. (chains, draws)) [units of name].
    bounds : mapping
        ``name -> (low, high)`` prior range of each name in ``samples`` [units of name].
    min_fraction : float in (0, 1]
        Fraction of draws near a bound that counts as piled up.
    width : float in (0, 0.5)
        Distance from the bound, as a fraction of ``high - low``.

    Returns
    -------
    list of BoundPileup
        ``(name, side, bound, fraction)``, largest fraction first; empty if none.
    """
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction!r}")
    if not 0 < width < 0.5:
        raise ValueError(f"width must be in (0, 0.5) (a fraction of the prior range), got {width!r}")
    out = []
    for name, s in samples.items():
        if name not in bounds:
            raise ValueError(f"samples: {name!r} has no entry in bounds")
        for f in bound_pileup_sides(s, *bounds[name], width=width):
            if f["fraction"] >= min_fraction:
                out.append(BoundPileup(name, f["side"], f["bound"], f["fraction"]))
    out.sort(key=lambda p: -p.fraction)
    return out
