"""Is the overlap-weighted likelihood calibrated? Posterior width against the true scatter, at the truth.

Overlapping (grown) gridding windows share visibilities, so the gridded cells of one channel are
correlated: ``Cov(V_c, V_c') = sum_j A_cj A_c'j s_j^2`` per real/imaginary component (``A`` the
normalised window weights, ``s_j`` the visibility noise; the imaginary part changes sign where a
visibility enters one cell as itself and the other as its conjugate). For a working likelihood
with per-cell weights ``Omega_c = w_c / sigma_c^2`` and model derivatives ``D`` at the truth, this
prints, for log10 M_BH (linearised, Gaussian noise with the true per-cell variance, no prior):

* ``post``: the working likelihood's own width, ``sqrt(H^-1)``, ``H = D^T Omega D`` (what the fit
  reports, up to the Student-t factor);
* ``true``: the actual scatter of its estimate, the sandwich ``sqrt(H^-1 D^T Omega Sigma Omega D H^-1)``;
* ``ratio = post / true``: 1 calibrated, < 1 over-confident (intervals too narrow);
* ``gls``: the best width any estimator on these cells reaches, ``sqrt((D^T Sigma^-1 D)^-1)``.

for independent cells (``w = 1``), the overlap weights (``w = 1 / m_c``) and the non-grown cells
only (``mask_grown``). Deterministic and a few minutes on a CPU, it complements the noise
realisations of ``m5_recovery.py --seeds``.

    .venv/bin/python validation/overlap_sandwich.py OBS.npz [OBS2.npz ...] [--case sparse]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nuker_mge_plugin.inference.config import config_from_dict  # noqa: E402
from nuker_mge_plugin.inference.fit import build_problem  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_example  # noqa: E402
from m5_recovery import CASES  # noqa: E402


def model_derivatives(prob, z):
    """dM/dz (d, n_cells) complex at unconstrained z, forward-mode through the cube (as FitProblem.jacobian)."""
    import torch.autograd.forward_ad as fwad

    eye = torch.eye(z.numel(), dtype=z.dtype)
    tangents = []
    for k in range(z.numel()):
        with fwad.dual_level():
            cube = prob.model.sky_cube(prob.params(fwad.make_dual(z, eye[k]).unsqueeze(0)))[0]
            tangents.append(fwad.unpack_dual(cube).tangent)
    with torch.no_grad():
        return prob.model.cell_model(torch.stack(tangents)).numpy()


def cell_covariances(prob, obs):
    """Per channel: (cell positions, Sigma_re, Sigma_im) of the modelled cells' noise [Jy^2]."""
    cells = prob.cells
    s = prob.gridded.samples
    m = prob.gridded.mask.ravel()
    # the model's cells are a subset of the gridder's usable cells: map them to sample records
    rank = np.cumsum(m) - 1
    ci = cells.cell_index.numpy()
    s2 = 1.0 / obs["weight"]  # per-component variance of a visibility (mock: weight = 1 / sigma^2)
    out = []
    chan = cells.chan.numpy()
    for c in np.unique(chan):
        pos = np.flatnonzero(chan == c)
        rows, cols, vals, sgn = [], [], [], []
        for i, p in enumerate(pos):
            r = rank[ci[p]]
            sl = slice(s.ptr[r], s.ptr[r + 1])
            j = s.row[sl]
            conj = np.abs(s.u[sl] + obs["u"][j]) + np.abs(s.v[sl] + obs["v"][j]) < \
                np.abs(s.u[sl] - obs["u"][j]) + np.abs(s.v[sl] - obs["v"][j])
            rows.append(np.full(j.size, i))
            cols.append(j)
            vals.append(s.weight[sl])
            sgn.append(np.where(conj, -1.0, 1.0))
        rows, cols, vals, sgn = map(np.concatenate, (rows, cols, vals, sgn))
        ucols, inv = np.unique(cols, return_inverse=True)
        A = sp.csr_matrix((vals, (rows, inv)), shape=(pos.size, ucols.size))
        As = sp.csr_matrix((vals * sgn, (rows, inv)), shape=(pos.size, ucols.size))
        S = sp.diags(s2[ucols])
        out.append((pos, (A @ S @ A.T).toarray(), (As @ S @ As.T).toarray()))
    return out


def widths(D, blocks, w, k):
    """post, true (sandwich) and gls widths of parameter k for working weights w (n_cells,)."""
    d = D.shape[0]
    H, B, G = np.zeros((d, d)), np.zeros((d, d)), np.zeros((d, d))
    for pos, Sre, Sim in blocks:
        for part, S in ((D.real[:, pos], Sre), (D.imag[:, pos], Sim)):
            var = np.diag(S)
            Om = w[pos] / var  # the working likelihood's weights, with the true per-cell variance
            X = part * Om  # (d, n)
            H += X @ part.T
            B += X @ S @ X.T
            G += part @ np.linalg.pinv(S, rcond=1e-10, hermitian=True) @ part.T  # duplicated cells: singular
    Hi = np.linalg.inv(H)
    post = np.sqrt(Hi[k, k])
    true = np.sqrt((Hi @ B @ Hi)[k, k])
    gls = np.sqrt(np.linalg.inv(G)[k, k])
    return dict(post=post, true=true, ratio=post / true, gls=gls)


def check(obs_path, case="sparse"):
    from nuker_mge_plugin.observation import load_observation

    fit = load_example("ngc4697_fit.toml")
    fit["data"]["path"] = str(Path(obs_path).resolve())
    fit["priors"].update(CASES[case][2])
    fit["model"].update(CASES[case][3])
    fit["sampler"]["dtype"] = "float64"  # an accuracy study: the demo's float32 model would add its rounding
    obs = load_observation(fit["data"]["path"])
    res = {}
    for label, mask_grown in (("all_cells", False), ("mask_grown", True)):
        f = json.loads(json.dumps(fit))
        f.setdefault("gridding", {})["mask_grown"] = mask_grown
        cfg = config_from_dict(f, base_dir=str(Path(obs_path).parent))
        prob = build_problem(cfg, progress=False)
        sp_ = prob.space
        truth = prob.truth
        theta = torch.tensor([[truth[n] for n in sp_.free_names]], dtype=torch.float64)
        z = sp_.unconstrain(theta)[0]
        D = model_derivatives(prob, z)
        blocks = cell_covariances(prob, obs)
        k = sp_.free_names.index("log10_mbh")
        ov = prob.cells.overlap.numpy()
        if mask_grown:
            res["mask_grown"] = dict(n_cells=prob.cells.n_cells, overlap_max=float(ov.max()),
                                     **widths(D, blocks, 1.0 / ov, k))
        else:
            res["independent"] = dict(n_cells=prob.cells.n_cells, **widths(D, blocks, np.ones_like(ov), k))
            res["overlap_weights"] = dict(n_cells=prob.cells.n_cells, overlap_mean=float(ov.mean()),
                                          **widths(D, blocks, 1.0 / ov, k))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("obs", nargs="+",
                    help="observation .npz files (e.g. validation/out/m5_overlap/sparse/seed21/obs.npz)")
    ap.add_argument("--case", default="sparse", help="m5_recovery case whose prior/model changes apply")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = {}
    for p in a.obs:
        out[p] = check(p, a.case)
        print(json.dumps({p: out[p]}), flush=True)


if __name__ == "__main__":
    main()
