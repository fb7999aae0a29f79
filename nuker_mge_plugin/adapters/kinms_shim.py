"""One call that builds a KinMS cube whatever KinMS is installed.

KinMS 3.x: ``KinMS(xs, ys, vs, cellSize, dv, beamSize, nSamps=, seed=).model_cube(inc, posAng, ...)``.
KinMS 2.2.x: ``KinMS(xs, ys, vs, cellSize, dv, beamSize, inc, posAng, ...).model_cube()``.
"""

import inspect


def kinms_class():
    """The installed ``KinMS`` class."""
    try:
        from kinms import KinMS
    except ImportError as err:
        raise ImportError("KinMS is not installed: 'pip install kinms'") from err
    return KinMS


def kinms_major_version():
    """2 for the all-in-constructor API, 3 for the grid/model split."""
    params = inspect.signature(kinms_class().__init__).parameters
    return 2 if "inc" in params else 3


def kinms_model_cube(xs, ys, vs, cellSize, dv, beamSize, inc, posAng, *, nSamps=None, seed=None, cleanOut=False,
                     **model_kwargs):
    """KinMS cube [Jy/beam per pixel and channel], shape (xs/cellSize, ys/cellSize, vs/dv).

    Arguments as KinMS's: sizes in arcsec and km/s, ``inc``/``posAng`` in degrees, and any
    model keyword (``sbProf, sbRad, velRad, velProf, gasSigma, intFlux, phaseCent, vOffset``...).
    ``seed`` (an integer) makes the random cloudlets repeatable; ``cleanOut=True`` skips the beam
    convolution (Jy/pixel).
    """
    KinMS = kinms_class()
    if kinms_major_version() == 2:
        kin = KinMS(xs, ys, vs, cellSize, dv, beamSize, inc, posAng, nSamps=nSamps, seed=seed,
                    fixSeed=seed is not None, cleanOut=cleanOut, **model_kwargs)
        return kin.model_cube()
    kin = KinMS(xs, ys, vs, cellSize, dv, beamSize, nSamps=nSamps, seed=seed, fixSeed=seed is not None,
                cleanOut=cleanOut)
    return kin.model_cube(inc, posAng, **model_kwargs)
