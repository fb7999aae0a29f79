"""A kinms_fitter velocity profile whose stellar mass is a Nuker profile (seed paper Table 1).

Use it like kinms_fitter's own ``velocity_profs.mge_vcirc``::

    from nuker_mge_plugin.adapters.kinms_fitter import nuker_vcirc
    fit.vel_profile = [nuker_vcirc(distance=11.4, guesses=[...], minimums=[...], maximums=[...])]

Free parameters, in order (Table 1 names): ``intensity_rb`` = log10 Sigma_b [Msun/pc^2],
``break_r`` [arcsec], ``alpha``, ``gamma_minus_beta`` (< 0), ``gamma``, ``qintr`` (intrinsic axis
ratio, so every inclination deprojects) and ``logMBH`` [log10 Msun].

A whole fit that runs to the end with the pinned hosts (kinms-fitter 0.5.14, gastimator 0.5.2,
matplotlib < 3.11, numpy 2.4): :class:`CompatKinmsFitter`, kinms_fitter's class plus three
scoped fixes, each explained in docs/kinms_fitter.rst and tested in tests/test_kinms_fitter_route.py.
:func:`write_mock_fits` writes a KinMS mock cube that kinms_fitter reads.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

import warnings

import numpy as np

from ..mge import nuker_to_mge

LABELS = ["intensity_rb", "break_r", "alpha", "gamma_minus_beta", "gamma", "qintr", "logMBH"]
UNITS = ["log10(Msun/pc^2)", "arcsec", "", "", "", "", "log_Msun"]
#: Table 1 bounds of the seed paper, usable as defaults.
TABLE1_MIN = [1.0, 0.41, 0.1, -3.0, 0.001, 0.1, 6.0]
TABLE1_MAX = [5.0, 5.0, 10.0, -0.3, 1.2, 1.0, 9.79934]


def qobs_from_qintr(qintr, inc_deg):
    """Observed axis ratio of an oblate spheroid of intrinsic ratio ``qintr`` seen at ``inc_deg``."""
    inc = np.radians(inc_deg)
    return np.sqrt(qintr**2 * np.sin(inc) ** 2 + np.cos(inc) ** 2)


class nuker_vcirc:  # noqa: N801 -- kinms_fitter names its profiles in lower case
    """Circular velocity [km/s] of a Nuker stellar mass (via its 64-Gaussian MGE and jampy) plus a BH.

    Parameters
    ----------
    distance : galaxy distance [Mpc].
    guesses, minimums, maximums : 7 values each, in the order of ``LABELS``.
    priors, precisions, fixed : as in kinms_fitter (optional).
    backend : "exact" or "nn" Nuker -> MGE backend.
    """

    def __init__(self, distance, guesses, minimums=TABLE1_MIN, maximums=TABLE1_MAX, priors=None,
                 precisions=None, fixed=None, backend="exact"):
        self.distance = float(distance)
        self.backend = backend
        self.freeparams = len(LABELS)
        self.labels = np.array(LABELS)
        self.units = np.array(UNITS)
        self.operation = "quad"
        self.guess = np.array(guesses, dtype=float)
        self.min = np.array(minimums, dtype=float)
        self.max = np.array(maximums, dtype=float)
        for name, arr in (("guesses", self.guess), ("minimums", self.min), ("maximums", self.max)):
            if arr.shape != (self.freeparams,):
                raise ValueError(f"{name} must have {self.freeparams} values ({', '.join(LABELS)}), got {arr.size}")
        if np.any(self.min > self.max):
            raise ValueError("minimums must not exceed maximums")
        if self.max[3] >= 0:
            raise ValueError("gamma_minus_beta must stay < 0 (beta > gamma): its maximum must be negative")
        self.fixed = np.resize(False, self.freeparams) if fixed is None else np.asarray(fixed)
        self.priors = np.resize(None, self.freeparams) if priors is None else np.asarray(priors)
        self.precisions = (self.max - self.min) / 10.0 if precisions is None else np.asarray(precisions)

    def __repr__(self):
        return f"{self.__class__.__name__}(distance={self.distance} Mpc, backend={self.backend!r}, labels={LABELS})"

    def mge(self, args, inc_deg):
        """The MGE (see :func:`nuker_to_mge`) for parameter vector ``args`` at ``inc_deg``."""
        log_sb, r_b, alpha, g_minus_b, gamma, qintr, _ = np.asarray(args, dtype=float)
        return nuker_to_mge(sigma_b=10**log_sb, r_b=r_b, alpha=alpha, beta=gamma - g_minus_b, gamma=gamma,
                            qobs=float(qobs_from_qintr(qintr, inc_deg)), distance=self.distance,
                            backend=self.backend)

    def __call__(self, x, args, **kwargs):
        """v_c [km/s] at radii ``x`` [arcsec]; kinms_fitter passes ``inc=`` [deg]."""
        inc = float(np.atleast_1d(kwargs.get("inc", 90.0))[0])
        return self.mge(args, inc).vcirc(np.asarray(x, dtype=float), inc, 10 ** float(args[6]))


# ----------------------------------------------------------------------------------------------
# A kinms_fitter run that finishes with numpy 2.4 (docs/kinms_fitter.rst, "What is fixed here")
# ----------------------------------------------------------------------------------------------

def _as_scalar(value):
    """A size-1 ndarray with ndim >= 1 as its Python scalar; anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim > 0 and value.size == 1:
        return value.item()
    return value


class _ScalarLimitsNumpy:
    """numpy, except that ``arange`` takes size-1 arrays as its start, stop and step.

    kinms_fitter 0.5.x ``run`` extends its radius grid with ``np.arange(a, b * inc_multfac, c)``,
    where ``inc_multfac = 1 / cos(inc guess)`` is a (1,) array; numpy 2.4 refuses that
    (``TypeError: only 0-dimensional arrays can be converted to Python scalars``) whenever the
    inclination guess exceeds 60 deg. Only kinms_fitter's module sees this object, only inside
    :meth:`CompatKinmsFitter.run`; every other attribute is numpy's own.
    """

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def arange(*args, **kwargs):
        return np.arange(*map(_as_scalar, args), **{k: _as_scalar(v) for k, v in kwargs.items()})


def _take_step(self, values, changethistime, knob):
    """GAStimator's Gibbs step for parameter ``changethistime``, with a scalar Gaussian draw.

    GAStimator (0.4.5-0.5.4, all checked) assigns ``rng.randn(1) * knob[i]``, a (1,) array, to the
    scalar ``newvals[i]``, which numpy 2.4 refuses (``ValueError: setting an array element with a
    sequence``). Same proposal, same bounds rule, same random stream: ``randn()`` draws the one
    normal that ``randn(1)`` did.
    """
    i = changethistime
    newvals = values.copy()
    for _ in range(5001):
        trial = values[i] + self.rng.randn() * knob[i]
        if self.min[i] <= trial <= self.max[i]:
            newvals[i] = trial
            return newvals
    raise RuntimeError("Cannot find a good step. Check input parameters")  # GAStimator's own message


def _run_with_numatonce(self, fdata, error, niters, numatonce=None, *args, **kwargs):
    """GAStimator's ``run``; ``numatonce`` defaults to ``self.numatonce_default`` when that is set."""
    from gastimator import gastimator

    if not numatonce:
        numatonce = getattr(self, "numatonce_default", None)
    return gastimator.run(self, fdata, error, niters, numatonce, *args, **kwargs)


def _make_compat_gastimator():
    from gastimator import gastimator

    doc = ("GAStimator with :func:`_take_step`; ``numatonce_default`` (None: GAStimator's 50 x number of "
           "parameters) sets the length of each adaptive chunk of its burn-in.")
    return type("CompatGAStimator", (gastimator,), {"__module__": __name__, "__qualname__": "CompatGAStimator",
                                                    "take_step": _take_step, "run": _run_with_numatonce,
                                                    "numatonce_default": None, "__doc__": doc})


def _compat_gastimator_factory(numatonce):
    """What kinms_fitter's ``mcmc_fit`` calls as ``gastimator(model)`` inside :meth:`CompatKinmsFitter.run`."""
    cls = __getattr__("CompatGAStimator")

    def make(model, *args, **kwargs):
        mcmc = cls(model, *args, **kwargs)
        mcmc.numatonce_default = None if numatonce is None else int(numatonce)
        return mcmc

    return make


def _chi2_mask_fallback(fit):
    """Make kinms_fitter's chi^2 variance correction usable when its data mask is empty.

    kinms_fitter sets ``chi2_correct_fac = (2 * mask_sum) ** 0.25`` (van den Bosch & van de Ven
    2009), with ``mask_sum`` the pixels of the *data* cube above ``1.5 rms`` after smoothing over
    1.5 beams and 4 channels (KinMS_plotter's mask, made while plotting the initial model). With an
    empty mask (a faint line, an rms estimated from channels that hold line, or a plot that was
    skipped) the factor is 0, every error is 0 and no step is ever accepted. Here: a factor the
    user set is kept; an empty data mask falls back to the initial *model*'s mask (same
    smoothing and threshold) with a warning; if that is empty too, a ValueError says what to set.
    """
    if not fit.chi2_var_correct or fit.chi2_correct_fac is not None or fit.mask_sum > 0:
        return
    overmask = getattr(getattr(fit, "figout", None), "overmask", None)
    n_model = 0 if overmask is None else int(np.nansum(overmask))
    if n_model == 0:
        raise ValueError("kinms_fitter's chi^2 correction mask is empty (no pixel of the smoothed data or of "
                         "the initial model is above 1.5 rms): set fit.chi2_correct_fac = (2 * N) ** 0.25 for "
                         "N pixels with signal, or fit.chi2_var_correct = False")
    warnings.warn(f"kinms_fitter's data mask is empty (rms = {fit.rms:.3g}): the chi^2 correction uses the "
                  f"initial model's mask instead ({n_model} pixels)", RuntimeWarning, stacklevel=3)
    fit.mask_sum = n_model


_ASPECT_HINT = ("KinMS's KinMS_figures passes aspect= to contourf, which matplotlib >= 3.11 refuses; "
                "install 'matplotlib<3.11' (pip install 'nuker-mge-plugin[fitter]' pins it)")


def _gastimator_check():
    import importlib

    gmod = importlib.import_module("gastimator.gastimator")  # the module, not the class of that name
    init_code = getattr(gmod.gastimator.__init__, "__code__", None)
    if init_code is not None and "__version__" in init_code.co_names and "__version__" not in vars(gmod):
        raise ImportError("this GAStimator (0.5.4) fails on its first line ('__version__' is not defined): "
                          "install 'gastimator==0.5.2' (pip install 'nuker-mge-plugin[fitter]' pins it)")


def _make_compat_kinms_fitter():
    import importlib

    # the package's __init__ rebinds the name kinms_fitter.kinms_fitter to the class: ask for the module
    kfmod = importlib.import_module("kinms_fitter.kinms_fitter")
    class CompatKinmsFitter(kfmod.kinms_fitter):
        """kinms_fitter's ``kinms_fitter`` with three scoped fixes (docs/kinms_fitter.rst).

        Use it exactly as ``kinms_fitter.kinms_fitter``. During :meth:`run` only, kinms_fitter's
        module sees :class:`_ScalarLimitsNumpy` as ``np`` and :class:`CompatGAStimator` as
        ``gastimator``; both are restored afterwards, even on an error. An empty chi^2 mask
        falls back to the initial model's (:func:`_chi2_mask_fallback`). The matplotlib >= 3.11
        failure of KinMS's figures is turned into an error that names the pin.

        One addition: ``mcmc_numatonce`` (default None: GAStimator's 50 steps per parameter, fixed
        ones included) is the length of each adaptive chunk of GAStimator's burn-in, which
        kinms_fitter does not expose. A fit takes about ``max(niters, mcmc_numatonce) + niters``
        model evaluations, so a short smoke fit of 15 parameters needs it set (tests do).
        """

        mcmc_numatonce = None

        def run(self, *args, **kwargs):
            _gastimator_check()
            if "breakpoint" in kfmod.kinms_fitter.run.__code__.co_names:
                raise ImportError("this kinms_fitter (0.5.15) stops in pdb at a leftover breakpoint() in run(): "
                                  "install 'kinms-fitter==0.5.14' (pip install 'nuker-mge-plugin[fitter]' pins it)")
            saved = kfmod.np, kfmod.gastimator
            kfmod.np, kfmod.gastimator = _ScalarLimitsNumpy(), _compat_gastimator_factory(self.mcmc_numatonce)
            try:
                return super().run(*args, **kwargs)
            finally:
                kfmod.np, kfmod.gastimator = saved

        def mcmc_fit(self, *args, **kwargs):
            _chi2_mask_fallback(self)
            return super().mcmc_fit(*args, **kwargs)

        def simple_fit(self, *args, **kwargs):
            _chi2_mask_fallback(self)
            return super().simple_fit(*args, **kwargs)

        def plot(self, *args, **kwargs):
            try:
                return super().plot(*args, **kwargs)
            except AttributeError as err:
                if "unexpected keyword argument 'aspect'" in str(err):
                    raise RuntimeError(_ASPECT_HINT) from err
                raise

    CompatKinmsFitter.__module__ = __name__
    CompatKinmsFitter.__qualname__ = "CompatKinmsFitter"
    return CompatKinmsFitter


_LAZY = {"CompatGAStimator": _make_compat_gastimator, "CompatKinmsFitter": _make_compat_kinms_fitter}


def __getattr__(name):
    """Build the kinms_fitter/GAStimator subclasses on first use, so importing this module needs neither.

    They live in this module's namespace afterwards, so pickle (joblib's worker processes, for
    ``nprocesses > 1``) finds them by name.
    """
    if name in _LAZY:
        if name not in globals():
            globals()[name] = _LAZY[name]()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------
# A KinMS mock cube in the FITS form kinms_fitter reads
# ----------------------------------------------------------------------------------------------

def write_mock_fits(path, truth, distance_mpc, *, n_pix=64, cell_arcsec=0.1, n_chan=30, dv_kms=25.0,
                    beam_arcsec=(0.3, 0.3, 0.0), peak_snr=30.0, nsamps=200_000, seed=0, ra_deg=192.0,
                    dec_deg=-5.8, rest_freq_hz=230.538e9, noise="white"):
    """Write a noisy KinMS cube [Jy/beam] of the Table-1 parameters ``truth`` to ``path`` (FITS).

    The sky is :func:`nuker_mge_plugin.mock.kinms_sky_from_parameters` (KinMS clouds moving with
    jampy's v_c of the true Nuker MGE plus the black hole), convolved with the beam ``(bmaj, bmin,
    bpa)`` [arcsec, arcsec, deg] by KinMS, plus Gaussian noise of rms ``peak / peak_snr`` in every
    pixel: ``noise="white"`` (default) uncorrelated, as kinms_fitter's likelihood assumes;
    ``noise="beam"`` white noise convolved with the beam and scaled to that rms, as in a cleaned
    cube (``nuker_mge_plugin.image.fourier``'s noise model).
    Header: RA---SIN/DEC--SIN centred (CRPIX = n_pix // 2 + 1) on ``ra_deg, dec_deg``, where
    KinMS puts ``phaseCent = (0, 0)``; VRAD [m/s] with channel k at ``systemic_velocity + (k -
    n_chan / 2) dv_kms`` (KinMS's channel convention, measured in tests/test_kinms_fitter_route.py);
    BMAJ/BMIN/BPA, BUNIT Jy/beam, RESTFRQ. Returns ``dict(rms=..., peak=..., cube=...)`` (x, y, v).
    """
    from astropy.io import fits

    from ..mock import kinms_sky_from_parameters
    from .kinms_shim import kinms_model_cube

    if n_pix < 8 or n_chan < 8 or not peak_snr > 0:
        raise ValueError("need n_pix >= 8, n_chan >= 8 and peak_snr > 0")
    field = n_pix * cell_arcsec
    beam = [float(b) for b in beam_arcsec]
    sky = kinms_sky_from_parameters(truth, distance_mpc, field_arcsec=field)
    cube = kinms_model_cube(field, field, n_chan * dv_kms, cell_arcsec, dv_kms, beam, nSamps=int(nsamps),
                            seed=seed + 1, **sky)
    peak = float(np.max(cube))
    rms = peak / peak_snr
    white = np.random.default_rng(seed).normal(size=cube.shape)
    if noise == "beam":
        from ..dynamics.coords import SkyGrid
        from ..image.fourier import beam_image

        b = beam_image(SkyGrid(n_pix, n_pix, cell_arcsec), *beam, wrapped=True)
        white = np.fft.ifft2(np.fft.fft2(white, axes=(0, 1)) * np.fft.fft2(b)[:, :, None], axes=(0, 1)).real
        white /= np.sqrt(float((b * b).sum()))  # unit rms per pixel in expectation
    elif noise != "white":
        raise ValueError(f"noise = {noise!r} is invalid: choose 'white' or 'beam'")
    noisy = cube + rms * white
    hdu = fits.PrimaryHDU(noisy.T.astype(np.float32))  # FITS axes (v, y, x)
    vsys = float(truth["systemic_velocity"])
    hdu.header.update(
        CTYPE1="RA---SIN", CUNIT1="deg", CRPIX1=n_pix // 2 + 1, CRVAL1=ra_deg,
        CDELT1=-cell_arcsec / 3600.0,
        CTYPE2="DEC--SIN", CUNIT2="deg", CRPIX2=n_pix // 2 + 1, CRVAL2=dec_deg, CDELT2=cell_arcsec / 3600.0,
        CTYPE3="VRAD", CUNIT3="m/s", CRPIX3=1, CRVAL3=(vsys - 0.5 * n_chan * dv_kms) * 1e3, CDELT3=dv_kms * 1e3,
        BMAJ=beam[0] / 3600.0, BMIN=beam[1] / 3600.0, BPA=beam[2], BUNIT="Jy/beam", BTYPE="Intensity",
        RESTFRQ=rest_freq_hz, SPECSYS="BARYCENT", RADESYS="FK5", EQUINOX=2000.0, OBJECT="nuker_mock")
    hdu.writeto(path, overwrite=True)
    return dict(rms=rms, peak=peak, cube=noisy)
