"""The ``nuker-mge`` command: convert a Nuker profile to an MGE table, simulate and fit ALMA data, run the demo,
train the emulator."""

import argparse
import math
import os
import re
import sys

import numpy as np

from . import __version__
from ._argparse import HelpFormatter
from ._files import StagedFiles, check_output_dir, check_output_file
from ._warnings import silence_fit_warnings
from .backends import BACKENDS, REGISTRY
from .constants import C_KMS

#: An NGC 4697-like galaxy (Davis et al. 2017 distance, BH mass and inclination); the Nuker
#: shape is a plausible power-law-galaxy profile, not a fit to data.
DEMO = dict(sigma_b=6.0e4, r_b=1.5, alpha=1.5, beta=1.8, gamma=0.25, qobs=0.6, distance=11.4,
            inc=76.0, mbh=1.3e8)
#: The demo's figure of its stars (README: docs/demo_mge.png).
DEMO_MGE_TITLE = "NGC 4697-like Nuker profile as a 64-Gaussian MGE (11.4 Mpc, i = 76 deg)"

DESCRIPTION = ("Nuker stellar-mass profiles as 64-Gaussian MGE tables for jampy and KinMS, and black-hole "
               "masses from ALMA visibilities with a differentiable gas-dynamical model.")
EPILOG = "Run 'nuker-mge COMMAND --help' for the options of one command."

#: Largest black-hole mass the command line accepts [Msun]: ten times the heaviest measured.
MBH_MAX = 1.0e11
#: Speed of light [km/s]: a Newtonian circular velocity above it means unphysical inputs.
#: Exit status of ``nuker-mge fit --strict`` when the chains have not converged.
EXIT_UNCONVERGED = 3

# A value that starts with "-" but is a number ("-6e4", "-.5", "-inf", "-nan"): argparse's own
# pattern knows only "-6" and "-6.0", and takes "--sigma-b -6e4" for a missing value.
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER  # see _NEGATIVE_NUMBER

    def error(self, message):  # one line, exit status 2, no usage dump for value errors
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_nuker_args(p):
    req = dict(required=True, type=float)
    p.add_argument("--sigma-b", **req, help="surface mass density at the break radius [Msun/pc^2], in (0, 1e12]")
    p.add_argument("--r-b", **req, help="break radius [arcsec] (1 pc-10 kpc exact, 2 pc-2 kpc nn)")
    p.add_argument("--alpha", **req, help="break sharpness (> 0)")
    p.add_argument("--beta", **req, help="outer slope (> gamma)")
    p.add_argument("--gamma", **req, help="inner slope, in [0, 2)")
    p.add_argument("--qobs", **req, help="observed axis ratio, in (0, 1]")
    p.add_argument("--distance", **req, help="distance [Mpc] (> 0)")
    p.add_argument("--backend", choices=BACKENDS, default="exact",
                   help="Nuker -> MGE backend: " + "; ".join(f"{b.name}: {b.description}" for b in REGISTRY.values()))


def build_parser():
    parser = _Parser(prog="nuker-mge", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("convert", help="write the MGE table of a Nuker profile",
                       description="Write the 64-Gaussian MGE table of a Nuker profile, print its projected "
                                   "masses and accuracy, and with --inc its jampy circular velocity.")
    _add_nuker_args(p)
    p.add_argument("-o", "--output", required=True, help="output table (numpy.loadtxt-readable text)")
    p.add_argument("--inc", type=float, default=None,
                   help="inclination [deg], in (arccos(qobs), 90]: prints v_c and adds it to --plot")
    p.add_argument("--mbh", type=float, default=None,
                   help=f"black-hole mass [Msun], in [0, {MBH_MAX:g}], for v_c (needs --inc; default 0)")
    p.add_argument("--plot", default=None,
                   help="write a figure here (PNG; the extension picks matplotlib's format): the profile "
                        "and its residuals, and with --inc the circular velocity")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("mock", help="simulate an observation (KinMS sky, ALMA-like array) from a TOML file")
    p.add_argument("config", help="mock configuration (TOML: [galaxy], [truth], [observation])")
    p.add_argument("--out", required=True, help="observation file to write (.npz)")
    p.set_defaults(func=_cmd_mock)

    p = sub.add_parser("fit", help="measure a black-hole mass: MAP, Fisher matrix, NUTS (or MALA), results",
                       description="Fit the visibilities (an observation .npz) or the cleaned FITS cube that the "
                                   "configuration's [data] path names: MAP, Fisher matrix, the sampler of "
                                   "[sampler] kind (NUTS by default, drawing until the chains converge; or "
                                   "the seed paper's Fisher-MALA), then results and products in the output "
                                   "directory. The last line says whether the chains converged (R-hat <= 1.01 "
                                   "and bulk and tail ESS >= 400 for every free parameter); when they did not "
                                   "it starts with 'warning:' and the intervals must not be quoted.")
    p.add_argument("config", nargs="?",
                   help="fit configuration (TOML: [data], [galaxy], [model], [priors], [sampler], ...)")
    p.add_argument("--print-config", action="store_true",
                   help="print every configuration key with its default and meaning, as a TOML template, and stop")
    p.add_argument("--out", default=None, help="results directory (default: the configuration's output.dir)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--strict", action="store_true",
                   help=f"exit status {EXIT_UNCONVERGED} when the chains have not converged (after writing every "
                        "result and product); without it an unconverged fit warns and exits 0")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("survey", help="fit many galaxies on Dask: a local cluster, a scheduler or a batch queue",
                       description="Fit every galaxy of a survey file (TOML: [survey] galaxies = fit "
                                   "configurations, [scheduler]) as one Dask task each, into DIR/<name>/. "
                                   "Rerunning the same command skips finished galaxies and resumes the "
                                   "others from their checkpoints. Writes DIR/results.csv, results.ecsv and "
                                   "survey_mbh.png. Exit status 1 when a galaxy failed. Needs the survey "
                                   "extra (pip install 'nuker-mge-plugin[survey]').")
    p.add_argument("config", help="survey file (TOML: [survey] galaxies, retries; [scheduler] address, "
                                  "n_workers, [scheduler.jobqueue])")
    p.add_argument("--out", required=True, help="survey results directory (one subdirectory per galaxy)")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything, print the plan (and a jobqueue cluster's batch script), submit nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p.set_defaults(func=_cmd_survey)

    p = sub.add_parser("demo", help="the whole story on an NGC 4697-like mock: Nuker MGE, mock, fit, results")
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--backend", choices=BACKENDS, default="exact", help="Nuker -> MGE backend")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quick", action="store_true",
                   help="a one-minute smoke run (small mock, short chains): not converged, not a measurement")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("convert-vis", help="convert a Measurement Set or UVFITS file to an observation .npz",
                       description="Read one field and one spectral window of a CASA Measurement Set (needs "
                                   "pip install 'nuker-mge-plugin[ms]') or a UVFITS file, average the parallel "
                                   "hands with their weights, drop flagged samples and autocorrelations, bring "
                                   "the phases to this package's sign convention (docs/visibility_formats.rst), "
                                   "and write the observation .npz that 'nuker-mge fit' reads.")
    p.add_argument("input", metavar="IN", help="Measurement Set folder or UVFITS file")
    p.add_argument("--out", required=True, help="observation file to write (.npz)")
    p.add_argument("--field", default=None, help="field (source) name or index (default: the only one with data)")
    p.add_argument("--spw", default=None, help="spectral window (MS) or IF (UVFITS) index, from 0 (default: the "
                                               "only one)")
    p.add_argument("--datacolumn", default="DATA", type=str.upper, choices=("DATA", "CORRECTED_DATA"),
                   help="MS data column")
    p.add_argument("--channels", default=None, metavar="a:b",
                   help="channels a to b-1 of the window (Python slice rules; default: all)")
    p.set_defaults(func=_cmd_convert_vis)

    try:
        from .emulator.train import add_cli
    except ImportError:
        pass
    else:
        add_cli(sub)
    return parser


def _check_plot_path(path):
    """``--plot``: a writable file whose extension names a matplotlib format."""
    check_output_file(path, "--plot")
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    from matplotlib.figure import Figure
    formats = Figure().canvas.get_supported_filetypes()
    if ext not in formats:
        raise ValueError(f"--plot {path}: " + ("give the file an extension, e.g. .png" if not ext else
                         f"'.{ext}' is not a figure format (use .png, or one of {', '.join(sorted(formats))})"))
    return ext


def _check_velocity_args(inc, mbh):
    """--inc and --mbh before any work: finite, in range, and --mbh only with --inc."""
    if mbh is not None and inc is None:
        raise ValueError("--mbh needs --inc: the black-hole mass only enters the circular velocity, which needs "
                         "an inclination")
    if inc is not None and not (math.isfinite(inc) and 0 < inc <= 90):
        raise ValueError(f"--inc {inc:g} is invalid: the inclination must be finite and in (0, 90] deg")
    if mbh is not None and not (math.isfinite(mbh) and 0 <= mbh <= MBH_MAX):
        raise ValueError(f"--mbh {mbh:g} is invalid: the black-hole mass must be finite and in [0, {MBH_MAX:g}] Msun")


def _mass_line(mge, beta):
    m1, m10, mtab = mge.projected_mass([1.0, 10.0, np.inf])
    if beta > 2:
        total = f"total {mtab:.4g} Msun"
    else:  # Sigma ~ R^-beta: the Nuker's projected mass grows without bound for beta <= 2
        total = (f"{mtab:.4g} Msun in the whole 64-Gaussian table (cut at sigma = 10 kpc; the Nuker's own "
                 f"total diverges for beta = {beta:g} <= 2)")
    return f"projected stellar mass within 1\": {m1:.4g} Msun, within 10\": {m10:.4g} Msun, {total}"


def _convert(a, output, inc, mbh, plot, title=None):
    """Check every input and output, compute in memory, then write the table (and figure) atomically."""
    from .mge import nuker_to_mge, profile_error
    _check_velocity_args(inc, mbh)
    check_output_file(output, "-o/--output")
    if plot:
        fmt = _check_plot_path(plot)
        if os.path.abspath(plot) == os.path.abspath(output):
            raise ValueError(f"--plot {plot} is the same file as -o/--output")
    mbh = 0.0 if mbh is None else mbh
    with StagedFiles() as files:
        table_tmp = files.stage(output, "-o/--output")
        plot_tmp = files.stage(plot, "--plot") if plot else None
        mge = nuker_to_mge(sigma_b=a.sigma_b, r_b=a.r_b, alpha=a.alpha, beta=a.beta, gamma=a.gamma,
                           qobs=a.qobs, distance=a.distance, backend=a.backend)
        lines = [f"wrote {output}: {len(mge)} Gaussians ({a.backend} backend), distance {a.distance:g} Mpc "
                 f"({mge.pc_per_arcsec:.2f} pc/arcsec)",
                 _mass_line(mge, a.beta),
                 f"max |MGE/Nuker - 1| over 3 pc-3 kpc: {profile_error(mge):.2e}"]
        if inc is not None:
            v = mge.vcirc([0.1, 1.0, 5.0], inc, mbh)
            if np.max(v) >= C_KMS:
                raise ValueError(f"the circular velocity reaches {np.max(v):.3g} km/s, faster than light: "
                                 f"sigma_b = {a.sigma_b:g} Msun/pc^2 and M_BH = {mbh:g} Msun are unphysical")
            lines.append(f"jampy v_c (i = {inc:g} deg, M_BH = {mbh:.3g} Msun) at 0.1\", 1\", 5\": "
                         + ", ".join(f"{x:.4g}" for x in v) + " km/s")
        if plot:
            from .plotting import plot_mge_summary
            plot_mge_summary(mge, plot_tmp, inc_deg=inc, mbh=mbh, title=title, format=fmt)
            lines.append(f"wrote {plot}")
        mge.save(table_tmp)
        files.commit()
    print("\n".join(lines))
    return mge


def _cmd_convert(args):
    _convert(args, args.output, args.inc, args.mbh, args.plot)
    return 0


def _cmd_mock(args):
    from .mock import load_mock_config, mock_from_parameters
    truth, distance, obs = load_mock_config(args.config)
    out = mock_from_parameters(args.out, truth, distance_mpc=distance, **obs)
    print(f"wrote {args.out}: {out['u'].size} visibilities in {out['chan_freq'].size} channels "
          f"(KinMS sky, {obs.get('n_ant', 24)} antennas); truth log10 M_BH = {truth['log10_mbh']:g}")
    return 0


def _cmd_fit(args):
    from .pipeline.config import config_template, load_config
    if args.print_config:
        print(config_template(), end="")
        return 0
    if args.config is None:
        raise ValueError("fit: give a configuration file (or --print-config for a template)")
    from .pipeline.fit import run_fit
    silence_fit_warnings()  # run_fit logs every warning line itself
    cfg = load_config(args.config)
    summary = run_fit(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    if args.strict and not summary["diagnostics"]["converged"]:
        print(f"nuker-mge: the chains have not converged (--strict): exit status {EXIT_UNCONVERGED}",
              file=sys.stderr)
        return EXIT_UNCONVERGED
    return 0


def _cmd_survey(args):
    from . import survey as sv
    check_output_dir(args.out, "--out")
    cfg = sv.load_survey(args.config, args.out)
    try:
        import distributed  # noqa: F401
        if cfg.scheduler.jobqueue is not None:
            import dask_jobqueue  # noqa: F401
    except ImportError as err:
        raise ValueError(f"nuker-mge survey needs Dask ({err.name} is not installed): "
                         "pip install 'nuker-mge-plugin[survey]'") from None
    if args.dry_run:
        print("\n".join(sv.describe_plan(cfg)))
        if cfg.scheduler.jobqueue is not None:
            print(f"batch script of each {cfg.scheduler.jobqueue.kind.upper()} job (not submitted):")
            print(sv.job_script(cfg))
        return 0
    res = sv.run_survey(cfg, args.out, progress=not args.no_progress)
    return 1 if res["n_failed"] else 0


def _cmd_convert_vis(args):
    """Measurement Set / UVFITS -> observation .npz (nuker_mge_plugin.io), one summary line."""
    import json

    from .io import load_visibilities
    from .observation import save_observation

    check_output_file(args.out, "--out")
    if os.path.abspath(args.out) == os.path.abspath(args.input):
        raise ValueError(f"--out {args.out} is the input file")
    try:
        obs = load_visibilities(args.input, field=args.field, spw=args.spw, datacolumn=args.datacolumn,
                                channels=args.channels)
    except ImportError as err:  # python-casacore missing: a one-line message, not a traceback
        raise ValueError(str(err)) from None
    save_observation(args.out, obs)
    meta = json.loads(str(obs["meta"]))
    c = meta["counts"]
    print(f"wrote {args.out}: {obs['u'].size} visibilities in {obs['chan_freq'].size} channels "
          f"({meta['freq_min_hz'] / 1e9:.6f}-{meta['freq_max_hz'] / 1e9:.6f} GHz) of field {meta['field']!r}, "
          f"spw {meta['spw']}, {meta['datacolumn']} ({meta['correlations']}); dropped {c['samples_flagged']} flagged "
          f"and {c['samples_bad_weight']} zero-weight samples, {c['rows_autocorrelation']} autocorrelation rows "
          f"(of {c['rows_read']} rows read)")
    return 0


def _cmd_demo(args):
    """Nuker -> MGE of an NGC 4697-like galaxy, a KinMS mock of it, and the full fit of the mock."""
    import shutil
    from importlib import resources

    from .pipeline.config import load_config
    from .mock import load_mock_config, mock_from_parameters
    from .pipeline.fit import run_fit
    from .pipeline.rundir import RunDir

    check_output_dir(args.out, "--out")
    os.makedirs(args.out, exist_ok=True)
    a = argparse.Namespace(**{k: v for k, v in DEMO.items() if k not in ("inc", "mbh")}, backend=args.backend)
    print("1/3 the stars: an NGC 4697-like Nuker profile as a 64-Gaussian MGE")
    _convert(a, os.path.join(args.out, "ngc4697_like_mge.txt"), DEMO["inc"], DEMO["mbh"],
             os.path.join(args.out, "ngc4697_like_mge.png"), title=DEMO_MGE_TITLE)
    examples = resources.files("nuker_mge_plugin") / "examples"
    mock_cfg = os.path.join(args.out, "ngc4697_mock.toml")
    fit_cfg = os.path.join(args.out, "ngc4697_fit.toml")
    suffix = "_quick" if args.quick else ""
    for name, dest in ((f"ngc4697_mock{suffix}.toml", mock_cfg), (f"ngc4697_fit{suffix}.toml", fit_cfg)):
        with resources.as_file(examples / name) as src:
            shutil.copyfile(src, dest)
    obs_path = os.path.join(args.out, f"ngc4697_mock{suffix}.npz")
    truth, distance, obs = load_mock_config(mock_cfg)
    print("2/3 the data: a mock ALMA CO(2-1) observation simulated by KinMS + jampy (no code of the fit)")
    if not os.path.exists(obs_path):
        mock_from_parameters(obs_path, truth, distance_mpc=distance, **obs)
    print(f"    {obs_path} (truth: log10 M_BH = {truth['log10_mbh']:g}, i = {truth['inclination']:g} deg)")
    cfg = load_config(fit_cfg)
    sampler = "NUTS warm-up and sampling" if cfg.sampler.kind == "nuts" else "MALA tuning and sampling"
    print(f"3/3 the fit: gridding, MAP, Fisher matrix, {sampler}")
    fit_dir = os.path.join(args.out, f"fit{suffix}")
    # the verdict (converged, or a warning line) is run_fit's last line; the demo exits 0 either way
    silence_fit_warnings()
    run_fit(cfg, fit_dir, resume=RunDir(fit_dir).started, progress=not args.no_progress)
    return 0


def _message(err):
    """The one-line message of an error, in command-line terms."""
    if isinstance(err, OSError) and not isinstance(err, FileExistsError) and err.filename is not None:
        text = f"{err.filename}: {err.strerror or err}"
    elif isinstance(err, OSError) and err.filename is not None:
        text = f"{err.filename} already exists"
    else:
        text = str(err)
    # messages of the Python API name keyword arguments; on the command line they are options
    text = text.replace("backend='exact'", "--backend exact").replace('backend="exact"', "--backend exact")
    return " ".join(text.split())


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a bare ``nuker-mge``: the usage and the list of commands
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as err:
        print(f"nuker-mge: error: {_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
