"""The ``nuker-mge`` command: convert a Nuker profile to an MGE table, run the demo, train the emulator."""

import argparse
import os
import sys

import numpy as np

from .backends import BACKENDS, REGISTRY

#: An NGC 4697-like galaxy (Davis et al. 2017 distance, BH mass and inclination); the Nuker
#: shape is a plausible power-law-galaxy profile, not a fit to data.
DEMO = dict(sigma_b=6.0e4, r_b=1.5, alpha=1.5, beta=1.8, gamma=0.25, qobs=0.6, distance=11.4,
            inc=76.0, mbh=1.3e8)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2, no usage dump for value errors
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_nuker_args(p, defaults=None):
    d = defaults or {}
    req = defaults is None
    p.add_argument("--sigma-b", type=float, required=req, default=d.get("sigma_b"),
                   help="surface mass density at the break radius [Msun/pc^2]")
    p.add_argument("--r-b", type=float, required=req, default=d.get("r_b"), help="break radius [arcsec]")
    p.add_argument("--alpha", type=float, required=req, default=d.get("alpha"), help="break sharpness (> 0)")
    p.add_argument("--beta", type=float, required=req, default=d.get("beta"), help="outer slope (> gamma)")
    p.add_argument("--gamma", type=float, required=req, default=d.get("gamma"), help="inner slope, in [0, 2)")
    p.add_argument("--qobs", type=float, required=req, default=d.get("qobs"), help="observed axis ratio (0, 1]")
    p.add_argument("--distance", type=float, required=req, default=d.get("distance"), help="distance [Mpc]")
    p.add_argument("--backend", choices=BACKENDS, default="exact",
                   help="Nuker -> MGE backend: " + "; ".join(f"{b.name}: {b.description}" for b in REGISTRY.values()))


def build_parser():
    parser = _Parser(prog="nuker-mge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("convert", help="write the MGE table of a Nuker profile")
    _add_nuker_args(p)
    p.add_argument("-o", "--output", required=True, help="output table (numpy.loadtxt-readable text)")
    p.add_argument("--inc", type=float, default=None, help="inclination [deg] for the velocity summary and plot")
    p.add_argument("--mbh", type=float, default=0.0, help="black-hole mass [Msun]")
    p.add_argument("--plot", default=None, help="write a PNG figure here")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("mock", help="simulate an observation (KinMS sky, ALMA-like array) from a TOML file")
    p.add_argument("config", help="mock configuration (TOML: [galaxy], [truth], [observation])")
    p.add_argument("--out", required=True, help="observation file to write (.npz)")
    p.set_defaults(func=_cmd_mock)

    p = sub.add_parser("fit", help="measure a black-hole mass: MAP, Fisher-preconditioned MALA, results")
    p.add_argument("config", help="fit configuration (TOML: [data], [galaxy], [model], [priors], [sampler], ...)")
    p.add_argument("--out", default=None, help="results directory (default: the configuration's output.dir)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("demo", help="the whole story on an NGC 4697-like mock: Nuker MGE, mock, fit, results")
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--backend", choices=BACKENDS, default="exact", help="Nuker -> MGE backend")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quick", action="store_true",
                   help="a one-minute smoke run (small mock, short chains): not converged, not a measurement")
    p.set_defaults(func=_cmd_demo)

    try:
        from .emulator.train import add_cli
    except ImportError:
        pass
    else:
        add_cli(sub)
    return parser


def _convert(a, output, inc, mbh, plot, title=None):
    from .mge import nuker_to_mge, profile_error
    mge = nuker_to_mge(sigma_b=a.sigma_b, r_b=a.r_b, alpha=a.alpha, beta=a.beta, gamma=a.gamma,
                       qobs=a.qobs, distance=a.distance, backend=a.backend)
    mge.save(output)
    m1, m10, mtot = mge.projected_mass([1.0, 10.0, np.inf])
    lines = [f"wrote {output}: {len(mge)} Gaussians ({a.backend} backend), distance {a.distance:g} Mpc "
             f"({mge.pc_per_arcsec:.2f} pc/arcsec)",
             f"projected stellar mass within 1\": {m1:.4g} Msun, within 10\": {m10:.4g} Msun, total {mtot:.4g} Msun",
             f"max |MGE/Nuker - 1| over 3 pc-3 kpc: {profile_error(mge):.2e}"]
    if inc is not None:
        v = mge.vcirc([0.1, 1.0, 5.0], inc, mbh)
        lines.append(f"jampy v_c (i = {inc:g} deg, M_BH = {mbh:.3g} Msun) at 0.1\", 1\", 5\": "
                     + ", ".join(f"{x:.1f}" for x in v) + " km/s")
    if plot:
        from .plotting import plot_mge_summary
        plot_mge_summary(mge, plot, inc_deg=inc if inc is not None else 90.0, mbh=mbh, title=title)
        lines.append(f"wrote {plot}")
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
    from .inference.config import load_config
    from .inference.fit import run_fit
    cfg = load_config(args.config)
    run_fit(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    return 0


def _cmd_demo(args):
    """Nuker -> MGE of an NGC 4697-like galaxy, a KinMS mock of it, and the full fit of the mock."""
    import shutil
    from importlib import resources

    from .inference.config import load_config
    from .inference.fit import run_fit
    from .mock import load_mock_config, mock_from_parameters

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} exists and is not a directory")
    os.makedirs(args.out, exist_ok=True)
    a = argparse.Namespace(**{k: v for k, v in DEMO.items() if k not in ("inc", "mbh")}, backend=args.backend)
    print("1/3 the stars: an NGC 4697-like Nuker profile as a 64-Gaussian MGE")
    _convert(a, os.path.join(args.out, "ngc4697_like_mge.txt"), DEMO["inc"], DEMO["mbh"],
             os.path.join(args.out, "ngc4697_like_mge.png"),
             title="NGC 4697-like Nuker profile as a 64-Gaussian MGE (11.4 Mpc, i = 76 deg)")
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
    print("3/3 the fit: gridding, MAP, Fisher matrix, MALA tuning and sampling")
    cfg = load_config(fit_cfg)
    fit_dir = os.path.join(args.out, f"fit{suffix}")
    run_fit(cfg, fit_dir, resume=os.path.exists(os.path.join(fit_dir, "map.json")), progress=not args.no_progress)
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:
        print(f"nuker-mge: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
