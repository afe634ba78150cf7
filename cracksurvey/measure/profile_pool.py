"""Along the crack: the shared depth and blur, robust smoothing of widths, a crack's summary.

Compiled kernels for :mod:`cracksurvey.measure.width_profile`. Everything here looks at the
samples of the same crack (``labels``) within a radius, never at a whole crack, so a result
depends only on the image and skeleton within a fixed distance of the sample: a tile with a
large enough halo gives the same widths as the whole image (docs/method.md, "Crack width").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import erf

from ._jit import kernel
from .profile_model import TABLE, K, S, W, depth_costs, pool_robust
from .profile_neighbours import nearest, neighbours

__all__ = [
    "CrackWidth",
    "aggregate_crack_width",
    "depth_blur_at",
    "drop_crossings",
    "local_depth_blur",
    "smooth_widths",
]


#: Grid of a crack's depth (log-spaced, steps of 1.5 %) for its joint estimate: searched at
#: every ``_REFINE``-th depth (12 % steps), then at every depth around the best of those. A
#: parabola through 12 % steps of the robust cost missed the depth by up to 3 % (and the width
#: of a wide band by as much) even on a noise-free profile.
_REFINE = 8
_LOG_K_GRID = np.linspace(np.log(0.03), 0.0, 30 * _REFINE + 1)
#: Depths at which every profile's misfit is computed (interpolated onto the grid above), and
#: the refitting steps of its width and centre at each: 7.6 % steps. With 15 % steps the
#: interpolated misfit put the depth of a clean 6-px band up to 5 % off (mean width error
#: 0.12 px over depths 0.2-0.8; 0.05 px now, at 18 % more width time; docs/method.md).
_LOG_K_TAB = np.linspace(np.log(0.03), 0.0, 49)
#: A crack's profiles share the model's systematic error: they count as at most this many
#: independent profiles for its depth and blur.
_N_EFF = 10.0
#: Model error, as a fraction of a profile's peak darkness (PSF not exactly Gaussian, pixel
#: aperture, interpolation, JPEG).
_MODEL_ERROR = 0.05
#: Weak prior of the depth (logit scale).
_PRIOR_K, _PRIOR_K_SD = 0.5, 0.6
_K_REL_MAX = 0.25
#: A crack whose freely fitted band is narrower than this (about the FWHM of the widest
#: plausible blur, sigma 1.2 px and the aperture) may be unresolved.
_RESOLVED_PX = 3.0
_PRIOR_K_REL = 0.45
#: A depth sample whose free fit is this many times wider than the median of its neighbourhood
#: (and resolved) is something the crack crosses (a pipe, a frame's shadow, a joint): it is left
#: out of that neighbourhood's depth and blur, which its resolved profile would otherwise decide.
_CROSSING_RATIO = 2.5


@kernel()
def drop_crossings(
    indptr: NDArray[np.int64],
    indices: NDArray[np.int64],
    w: NDArray[np.float64],
    ratio: float,
    resolved_px: float,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:  # pragma: no cover
    """Neighbour lists (CSR) without the neighbours whose free width ``w`` exceeds both
    ``ratio`` times the median of the neighbourhood's and ``resolved_px``."""
    n = indptr.size - 1
    out_ptr = np.zeros(n + 1, np.int64)
    out_idx = np.empty(indices.size, np.int64)
    t = 0
    for i in range(n):
        a, b = indptr[i], indptr[i + 1]
        med = np.median(w[indices[a:b]]) if b > a else 0.0
        for q in range(a, b):
            j = indices[q]
            if w[j] > ratio * med and w[j] > resolved_px:
                continue
            out_idx[t] = j
            t += 1
        out_ptr[i + 1] = t
    return out_ptr, out_idx[:t]


@kernel()
def smooth_widths(
    width: NDArray[np.float64],
    var: NDArray[np.float64],
    indptr: NDArray[np.int64],
    indices: NDArray[np.int64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:  # pragma: no cover
    """Robust pooled width (and its variance) over each sample's neighbours."""
    n = indptr.size - 1
    out_w = width.copy()
    out_v = var.copy()
    for i in range(n):
        a, b = indptr[i], indptr[i + 1]
        if b == a:
            continue
        est, se = pool_robust(width[indices[a:b]], var[indices[a:b]])
        if math.isfinite(est):
            out_w[i] = est
            out_v[i] = se * se
    return out_w, out_v


@kernel()
def local_depth_blur(
    indptr: NDArray[np.int64],
    indices: NDArray[np.int64],
    qa: NDArray[np.float64],
    qb: NDArray[np.float64],
    qc: NDArray[np.float64],
    sk: NDArray[np.float64],
    expected: NDArray[np.float64],
    log_k_tab: NDArray[np.float64],
    len_i: NDArray[np.float64],
    w_i: NDArray[np.float64],
    peak_i: NDArray[np.float64],
    log_k_grid: NDArray[np.float64],
    n_eff: float,
    prior_k: float,
    prior_k_sd: float,
    k_rel_max: float,
    resolved_px: float,
    prior_k_rel: float,
    psf_sigma: float,
    refine: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:  # pragma: no cover
    """Depth ``k``, its relative uncertainty and PSF sigma shared by each sample's neighbours.

    Neighbour ``j``'s misfit at depth ``exp(log_k_tab[q])`` and blur ``sigma`` is
    ``qa + qb (sigma - sk) + qc (sigma - sk)^2`` (:func:`~cracksurvey.measure.profile_kernels.
    depth_costs`), interpolated (Catmull-Rom in ``log k``) onto the finer ``log_k_grid``; in
    units of its ``expected`` misfit it is ``x``. For each ``k`` the neighbours share the sigma
    that minimises their cost (two reweighted least-squares steps), and the cost is the
    neighbours' mean Cauchy cost ``len_j * 4 log(1 + x / 4)`` times ``min(n, n_eff)`` (the
    profiles share the model's systematic error), plus the depth prior. The cost is evaluated at
    every ``refine``-th grid depth, then at every grid depth within ``refine`` of the best; its
    minimum (refined by a parabola) is the depth, and the half-range of ``log k`` (over the
    coarse depths) within one typical profile's cost of it the relative uncertainty. Neighbours
    narrower than ``resolved_px`` (median free width ``w_i``) whose depth stays that uncertain
    are narrower than their blur: the depth is the prior's, raised to the darkest peak seen
    (``peak_i``). ``psf_sigma`` > 0 fixes sigma.
    """
    n = indptr.size - 1
    k_out = np.full(n, np.nan)
    rel_out = np.full(n, np.nan)
    s_out = np.full(n, np.nan)
    ng = log_k_grid.size
    nt = log_k_tab.size
    # Catmull-Rom weights of the table points around each fine grid point
    tq = np.empty((ng, 4), np.int64)
    tw = np.empty((ng, 4))
    for g in range(ng):
        q = np.searchsorted(log_k_tab, log_k_grid[g]) - 1
        q = min(max(q, 0), nt - 2)
        f = (log_k_grid[g] - log_k_tab[q]) / (log_k_tab[q + 1] - log_k_tab[q])
        f2, f3 = f * f, f * f * f
        wts = (
            -0.5 * f3 + f2 - 0.5 * f,
            1.5 * f3 - 2.5 * f2 + 1.0,
            -1.5 * f3 + 2.0 * f2 + 0.5 * f,
            0.5 * f3 - 0.5 * f2,
        )
        for u in range(4):
            tq[g, u] = min(max(q - 1 + u, 0), nt - 1)
            tw[g, u] = wts[u]
    logit0 = math.log(prior_k / (1.0 - prior_k))
    prior = np.empty(ng)
    for g in range(ng):
        kk = min(math.exp(log_k_grid[g]), 0.999)
        pr = (math.log(kk / (1.0 - kk)) - logit0) / prior_k_sd
        prior[g] = pr * pr
    # every neighbour's quadratic on the fine grid, once
    n_p = qa.shape[0]
    fa = np.empty((n_p, ng))
    fb = np.empty((n_p, ng))
    fc = np.empty((n_p, ng))
    fs = np.empty((n_p, ng))
    for j in range(n_p):
        e = expected[j]
        for g in range(ng):
            va = vb = vc = vs = 0.0
            for u in range(4):
                q, f = tq[g, u], tw[g, u]
                va += f * qa[j, q]
                vb += f * qb[j, q]
                vc += f * qc[j, q]
                vs += f * sk[j, q]
            fa[j, g] = max(va, 0.0) / e
            fb[j, g] = vb / e
            fc[j, g] = max(vc, 0.0) / e
            fs[j, g] = vs
    cost = np.full(ng, np.inf)
    sig_g = np.full(ng, np.nan)
    for i in range(n):
        a, b = indptr[i], indptr[i + 1]
        cnt = b - a
        if cnt == 0:
            continue
        wgt = min(cnt, n_eff) / cnt
        members = indices[a:b]
        cost[:] = np.inf
        # every `refine`-th grid depth, then every depth around the best of those
        for g in range(0, ng, refine):
            sig_g[g], tot = _shared_sigma(fa, fb, fc, fs, g, len_i, members, psf_sigma)
            cost[g] = tot * wgt + prior[g]
        gc = int(np.argmin(cost))
        for g in range(max(gc - refine + 1, 0), min(gc + refine, ng)):
            if not math.isfinite(cost[g]):
                sig_g[g], tot = _shared_sigma(fa, fb, fc, fs, g, len_i, members, psf_sigma)
                cost[g] = tot * wgt + prior[g]
        gb = int(np.argmin(cost))
        f_min = cost[gb]
        lk_best = log_k_grid[gb]
        if 0 < gb < ng - 1 and math.isfinite(cost[gb - 1]) and math.isfinite(cost[gb + 1]):
            c0, c1, c2 = cost[gb - 1], cost[gb], cost[gb + 1]
            curv = c0 - 2.0 * c1 + c2
            if curv > 0:
                step = log_k_grid[gb + 1] - log_k_grid[gb]
                shift = 0.5 * step * (c0 - c2) / curv
                lk_best += min(max(shift, -step), step)
        unit = max(f_min / min(cnt, n_eff), 1.0)
        lo, hi = np.inf, -np.inf
        for g in range(0, ng, refine):
            if cost[g] <= f_min + unit:
                lo = min(lo, log_k_grid[g])
                hi = max(hi, log_k_grid[g])
        k_rel = max(0.5 * (hi - lo), 0.02)
        k = min(math.exp(lk_best), 1.0)
        sig = sig_g[gb]
        w_med = np.empty(cnt)
        for t in range(a, b):
            w_med[t - a] = w_i[indices[t]]
        if k_rel > k_rel_max and np.median(w_med) < resolved_px:
            for t in range(a, b):
                w_med[t - a] = peak_i[indices[t]]
            k = min(max(prior_k, np.median(w_med)), 1.0)
            k_rel = max(k_rel, prior_k_rel)
            lk = math.log(max(k, 1e-6))
            gq = min(max(int(np.searchsorted(log_k_grid, lk)), 0), ng - 1)
            if math.isfinite(cost[gq]):  # evaluated in this neighbourhood's search
                sig = sig_g[gq]
            else:
                sig, _ = _shared_sigma(fa, fb, fc, fs, gq, len_i, members, psf_sigma)
        k_out[i] = k
        rel_out[i] = k_rel
        s_out[i] = sig
    return k_out, rel_out, s_out


@kernel()
def _shared_sigma(
    fa: NDArray[np.float64],
    fb: NDArray[np.float64],
    fc: NDArray[np.float64],
    fs: NDArray[np.float64],
    g: int,
    len_i: NDArray[np.float64],
    members: NDArray[np.int64],
    psf_sigma: float,
) -> tuple[float, float]:  # pragma: no cover
    """The blur that minimises the neighbours' summed Cauchy cost at grid depth ``g``, and it.

    Neighbour ``j``'s misfit is ``fa + fb (sigma - fs) + fc (sigma - fs)^2`` (at ``[j, g]``).
    """
    cnt = members.size
    if psf_sigma > 0:
        sig = psf_sigma
    else:
        num = den = 0.0
        for t in range(cnt):
            j = members[t]
            num += len_i[j] * fs[j, g]
            den += len_i[j]
        sig = num / den
        for _ in range(2):
            num = den = 0.0
            for t in range(cnt):
                j = members[t]
                ds = sig - fs[j, g]
                x = max(fa[j, g] + fb[j, g] * ds + fc[j, g] * ds * ds, 0.0)
                psi = len_i[j] / (1.0 + x / 4.0)
                num += psi * (2.0 * fc[j, g] * fs[j, g] - fb[j, g])
                den += psi * 2.0 * fc[j, g]
            if den > 0:
                sig = min(max(num / den, 0.2), 3.0)
    tot = 0.0
    for t in range(cnt):
        j = members[t]
        ds = sig - fs[j, g]
        x = max(fa[j, g] + fb[j, g] * ds + fc[j, g] * ds * ds, 0.25 * fa[j, g])
        tot += len_i[j] * 4.0 * math.log1p(x / 4.0)
    return sig, tot


def depth_blur_at(
    pos: tuple[NDArray, NDArray, NDArray],
    at: NDArray[np.intp],
    dep: NDArray[np.intp],
    theta4: NDArray[np.float64],
    noise: NDArray[np.float64],
    n_pts: NDArray[np.float64],
    length: NDArray[np.float64],
    radius: float,
    psf_sigma_px: float | None,
    profiles: tuple[NDArray, ...],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Depth, its relative uncertainty and sigma at the samples ``at`` (NaN elsewhere).

    From the depth samples ``dep`` within ``radius`` on the same crack: their free fits
    ``theta4`` and their misfit tables (:func:`~cracksurvey.measure.profile_kernels.
    depth_costs`, :func:`~cracksurvey.measure.profile_pool.local_depth_blur`).
    """
    rs, cs, ls = pos
    n = rs.size
    k_out, rel_out, s_out = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    if at.size == 0 or dep.size == 0:
        return k_out, rel_out, s_out
    s, d, wt, m, lower, upper = profiles
    k = np.clip(theta4[dep, K], 1e-3, 1.0)
    w = theta4[dep, W]
    sig = theta4[dep, S]
    peak = k * np.abs(erf(w / (2.0 * math.sqrt(2.0) * np.maximum(sig, 0.3))))
    expected = (noise[dep] ** 2 + (_MODEL_ERROR * peak) ** 2) * n_pts[dep]
    qa, qb, qc, sk = (
        v[dep] for v in depth_costs(s, d, wt, m, theta4, lower, upper, dep, _LOG_K_TAB, TABLE)
    )
    # at each depth sample, from the depth samples around it; each sample ``at`` then takes
    # the values of the nearest depth sample on its crack
    indptr, idx = neighbours(rs[dep], cs[dep], ls[dep], rs[dep], cs[dep], ls[dep], float(radius))
    indptr, idx = drop_crossings(indptr, idx, w, _CROSSING_RATIO, _RESOLVED_PX)
    kd, reld, sd = local_depth_blur(
        indptr,
        idx,
        qa,
        qb,
        qc,
        sk,
        expected,
        _LOG_K_TAB,
        length[dep],
        w,
        peak,
        _LOG_K_GRID,
        _N_EFF,
        _PRIOR_K,
        _PRIOR_K_SD,
        _K_REL_MAX,
        _RESOLVED_PX,
        _PRIOR_K_REL,
        -1.0 if psf_sigma_px is None else float(psf_sigma_px),
        _REFINE,
    )
    src = nearest(rs[at], cs[at], ls[at], rs[dep], cs[dep], ls[dep], float(radius))
    has = src >= 0
    k_out[at[has]], rel_out[at[has]], s_out[at[has]] = kd[src[has]], reld[src[has]], sd[src[has]]
    return k_out, rel_out, s_out


@dataclass(frozen=True)
class CrackWidth:
    """Width summary of one crack (:func:`aggregate_crack_width`), in pixels.

    ``mean_px``, ``mean_sd_px``, ``p95_px`` and ``max_px`` are NaN when fewer than
    ``min_samples`` samples are above the limit; ``fraction_below_limit`` then says why.
    """

    mean_px: float
    mean_sd_px: float
    p95_px: float
    max_px: float
    fraction_below_limit: float
    n_samples: int
    limit_px: float


def aggregate_crack_width(
    width_px: ArrayLike,
    width_sd_px: ArrayLike,
    below_limit: ArrayLike,
    *,
    depth_rel_sd: ArrayLike | None = None,
    limit_px: ArrayLike | None = None,
    min_samples: int = 3,
) -> CrackWidth:
    """Summarise one crack's sample widths: mean with uncertainty, p95, max, fraction below.

    Samples below the limit or not measured stay out of the statistics (those below the limit
    count in ``fraction_below_limit``). The mean's uncertainty combines the samples' standard
    error with the crack's depth uncertainty, which all its samples share and which does not
    average down (``mean * depth_rel_sd``). ``p95`` and ``max`` are of the reported widths, so
    they carry the per-sample noise.

    Parameters
    ----------
    width_px, width_sd_px : ndarray of shape (n,), float, pixels
        From :class:`WidthMeasurement` (NaN where not a number).
    below_limit : ndarray of shape (n,), bool
    depth_rel_sd : ndarray of shape (n,), float, optional
        :attr:`WidthMeasurement.depth_rel_sd`; its median is used.
    limit_px : ndarray of shape (n,), float, pixels, optional
        Per-sample limit; the summary reports its median.
    min_samples : int
        Fewest samples above the limit for a number.

    Returns
    -------
    CrackWidth

    Examples
    --------
    >>> cw = aggregate_crack_width([2.0, 2.2, np.nan, 1.8], [0.2, 0.2, np.nan, 0.2],
    ...                            [False, False, True, False])
    >>> round(cw.mean_px, 2), round(cw.fraction_below_limit, 2)
    (2.0, 0.25)
    """
    w = np.asarray(width_px, dtype=np.float64).ravel()
    below = np.asarray(below_limit, dtype=bool).ravel()
    ok = np.isfinite(w) & ~below
    seen = ok | below
    frac = float(below.sum() / seen.sum()) if seen.any() else float("nan")
    lim = _nanmedian_or_nan(limit_px)
    nan = float("nan")
    if ok.sum() < min_samples:
        return CrackWidth(nan, nan, nan, nan, frac, int(ok.sum()), lim)
    wv = w[ok]
    mean = float(wv.mean())
    se = float(wv.std(ddof=1) / math.sqrt(wv.size))
    rel = _nanmedian_or_nan(depth_rel_sd)
    shared = mean * rel if np.isfinite(rel) else 0.0
    return CrackWidth(
        mean_px=mean,
        mean_sd_px=math.hypot(se, shared),
        p95_px=float(np.percentile(wv, 95)),
        max_px=float(wv.max()),
        fraction_below_limit=frac,
        n_samples=int(wv.size),
        limit_px=lim,
    )


def _nanmedian_or_nan(values: ArrayLike | None) -> float:
    if values is None:
        return float("nan")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")
