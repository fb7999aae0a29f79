"""Exercise the host-version shims alone (no torch): jampy's circular velocity and a KinMS cube.

Loads ``nuker_mge_plugin/adapters/{jampy,kinms}_shim.py`` by path, so it runs in an
environment that has the host packages but not torch. Prints JSON; ``run_matrix.py`` compares
the output of one environment with the default combination's.
"""

import importlib.util
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ADAPTERS = os.path.join(HERE, "..", "nuker_mge_plugin", "adapters")


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ADAPTERS, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    jampy_shim, kinms_shim = load("jampy_shim"), load("kinms_shim")
    import jampy
    table = os.path.join(os.path.dirname(jampy.__file__), "examples", "cappellari2020_table1.txt")
    # Intrinsic MGE (log density, log sigma, qintr) projected at 60 deg: Cappellari (2020) eqs. 35, 38.
    lg_dens, lg_sigma, qintr = np.loadtxt(table).T
    dens, sigma, inc = 10**lg_dens, 10**lg_sigma, np.radians(60.0)
    qobs = np.sqrt((qintr * np.sin(inc)) ** 2 + np.cos(inc) ** 2)
    surf = np.sqrt(2 * np.pi) * dens * sigma * qintr / qobs
    rad = np.geomspace(sigma.min() / 10, sigma.max() / 3, 12)
    v = jampy_shim.jampy_vcirc(surf, sigma, qobs, 60.0, 0.01, 0.648 / np.pi, rad)
    sbRad = np.linspace(0, 8, 100)
    cube = kinms_shim.kinms_model_cube(8, 8, 800, 0.25, 20, 0.5, 70.0, 90.0, nSamps=50000, seed=[1, 2, 3, 4],
                                       sbProf=np.exp(-sbRad / 1.5), sbRad=sbRad, velRad=sbRad,
                                       velProf=np.full(100, 200.0), intFlux=10.0, gasSigma=10.0)
    beam_pixels = np.pi * 0.5**2 / (4 * np.log(2)) / 0.25**2
    mom1 = (cube * np.arange(cube.shape[2])).sum(2) / np.maximum(cube.sum(2), 1e-30)
    print(json.dumps({"python": sys.version.split()[0], "jampy_vcirc_kms": v.tolist(),
                      "kinms_shape": list(cube.shape), "kinms_flux": float(cube.sum() * 20 / beam_pixels),
                      "kinms_major": kinms_shim.kinms_major_version(),
                      "kinms_mom1_left_right": [float(mom1[4:12, 14:18].mean()), float(mom1[20:28, 14:18].mean())]}))


if __name__ == "__main__":
    main()
