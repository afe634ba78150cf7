"""The profile across a crack for the image-based width: a strip of pixels, the wall under it.

Compiled (numba), one sample at a time, for :mod:`cracksurvey.measure.width_profile`:
:func:`strip_profile` takes the darkness profile of a located band (:mod:`cracksurvey.measure.
profile_locate`) from a strip of pixels across it; :func:`take_profiles` locates and takes the
profile at every sample of a tile. Coordinates: ``(row, col)``, pixel centres at integers.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from ._jit import kernel
from .profile_locate import locate_band, median_of, wall_line

__all__ = ["strip_profile", "take_profiles"]


# --------------------------------------------------------------------------------------------
# The profile: a strip of pixels across the band, the wall under it
# --------------------------------------------------------------------------------------------
#: The light smoothing before the closing: the binomial [1, 2, 1] / 4 (sigma 0.71 px).
_GAUSS = np.array([0.25, 0.5, 0.25])


@kernel()
def _running(
    a: NDArray[np.float64], size: int, is_max: bool, di: int, dj: int
) -> NDArray[np.float64]:  # pragma: no cover
    """Running max (or min) of ``size`` values along rows (``di, dj = 0, 1``) or columns
    (``1, 0``), the 'valid' part only.

    Van Herk / Gil-Werman: the line in blocks of ``size``, each block's running extremes from
    its start (``pre``) and from its end (``suf``); the window starting at ``i`` is
    ``suf[i]`` combined with ``pre[i + size - 1]``. About three comparisons per value whatever
    the size, where comparing every window's values costs ``size``; the same values (max and
    min are exact).
    """
    rows = a.shape[0] - (size - 1) * di
    cols = a.shape[1] - (size - 1) * dj
    out = np.empty((rows, cols))
    length = a.shape[1] if dj else a.shape[0]
    lines = a.shape[0] if dj else a.shape[1]
    n_out = length - size + 1
    pre = np.empty(length)
    suf = np.empty(length)
    line = np.empty(length)
    for q in range(lines):
        for t in range(length):
            line[t] = a[q, t] if dj else a[t, q]
        for b0 in range(0, length, size):
            b1 = min(b0 + size, length)
            v = line[b0]
            pre[b0] = v
            for t in range(b0 + 1, b1):
                v = max(v, line[t]) if is_max else min(v, line[t])
                pre[t] = v
            v = line[b1 - 1]
            suf[b1 - 1] = v
            for t in range(b1 - 2, b0 - 1, -1):
                v = max(v, line[t]) if is_max else min(v, line[t])
                suf[t] = v
        for i in range(n_out):
            x, y = suf[i], pre[i + size - 1]
            v = max(x, y) if is_max else min(x, y)
            if dj:
                out[q, i] = v
            else:
                out[i, q] = v
    return out


@kernel()
def _closing_at(
    img: NDArray[np.float64],
    pr: NDArray[np.int64],
    pc: NDArray[np.int64],
    n: int,
    rc: int,
    gauss: NDArray[np.float64],
    out: NDArray[np.float64],
) -> None:  # pragma: no cover
    """Grey closing (square of side ``2 rc + 1``) of the smoothed image at ``n`` pixels.

    Computed on the pixels' bounding box only: the smoothing (``gauss`` along rows and
    columns, ``nearest`` at the image's edges) on the box grown by ``2 rc``, the dilation on the box grown by ``rc``, then
    the erosion at the pixels, each square filter as two running 1-D filters.
    """
    h, w = img.shape
    r_lo, r_hi, c_lo, c_hi = pr[0], pr[0], pc[0], pc[0]
    for j in range(n):
        r_lo = min(r_lo, pr[j])
        r_hi = max(r_hi, pr[j])
        c_lo = min(c_lo, pc[j])
        c_hi = max(c_hi, pc[j])
    g_r0, g_c0 = r_lo - 2 * rc, c_lo - 2 * rc
    gh, gw = r_hi - r_lo + 4 * rc + 1, c_hi - c_lo + 4 * rc + 1
    kr = gauss.size // 2
    # separable Gaussian: rows of the raw patch, then columns
    tmp = np.empty((gh + 2 * kr, gw))
    for i in range(gh + 2 * kr):
        rr = min(max(g_r0 - kr + i, 0), h - 1)
        for j in range(gw):
            acc = 0.0
            for t in range(gauss.size):
                cc = min(max(g_c0 + j + t - kr, 0), w - 1)
                acc += gauss[t] * img[rr, cc]
            tmp[i, j] = acc
    g = np.empty((gh, gw))
    for i in range(gh):
        for j in range(gw):
            acc = 0.0
            for t in range(gauss.size):
                acc += gauss[t] * tmp[i + t, j]
            g[i, j] = acc
    # dilation on the box grown by rc (max along rows, then columns), then the erosion along
    # rows over the box's columns; along columns at the pixels only
    size = 2 * rc + 1
    hmin = _running(_running(_running(g, size, True, 0, 1), size, True, 1, 0), size, False, 0, 1)
    for k in range(n):
        i = pr[k] - r_lo
        j = pc[k] - c_lo
        v = hmin[i, j]
        for t in range(1, 2 * rc + 1):
            v = min(v, hmin[i + t, j])
        out[k] = v


@kernel()
def strip_profile(
    img: NDArray[np.float64],
    bad: NDArray[np.bool_],
    r0: float,
    c0: float,
    nr: float,
    nc: float,
    centre: float,
    half: float,
    tail: float,
    strip_half: float,
    wall_px: float,
    fit_margin: float,
    fill: float,
    sig_start: float,
    s_out: NDArray[np.float64],
    d_out: NDArray[np.float64],
    w_out: NDArray[np.float64],
    theta0: NDArray[np.float64],
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
    tab: NDArray[np.float64],
) -> tuple[bool, int, float, float]:  # pragma: no cover
    """The darkness profile of a located band from a strip of pixels across it.

    The strip is ``2 * strip_half`` long along the crack and spans the band, its tails and
    ``wall_px`` of wall on each side; every pixel keeps its exact offset from the band's
    centre (no interpolation). The wall under the band is the grey closing of the lightly
    smoothed image with a square a little wider than the band (``half + fill``), levelled by
    the line through the medians of ``image / closing`` on the band's two sides. Writes the
    offsets, darkness and weights (sorted by offset) of the points the fit sees (the band, its
    tails and ``fit_margin`` of the wall stretches), the fit's start and bounds; returns
    ``(ok, n_points, noise, n_used)``.
    """
    h, w = img.shape
    h_in = half + tail
    h_out = h_in + wall_px
    reach = int(math.ceil(h_out + strip_half)) + 1
    br = int(round(r0))
    bc = int(round(c0))
    cap = s_out.size
    side = 2 * reach + 1
    u_all = np.empty(side * side)
    pr_all = np.empty(side * side, np.int64)
    pc_all = np.empty(side * side, np.int64)
    n = 0
    for a in range(-reach, reach + 1):
        for b in range(-reach, reach + 1):
            rr, cc = br + a, bc + b
            if rr < 0 or rr >= h or cc < 0 or cc >= w:
                continue
            dr, dc = rr - r0, cc - c0
            u = dr * nr + dc * nc - centre
            v = -dr * nc + dc * nr
            if abs(u) <= h_out and abs(v) <= strip_half:
                u_all[n] = u
                pr_all[n] = rr
                pc_all[n] = cc
                n += 1
    if n == 0 or n > cap:
        return False, 0, np.nan, 0.0
    order = np.argsort(u_all[:n], kind="mergesort")
    pr = np.empty(n, np.int64)
    pc = np.empty(n, np.int64)
    for j in range(n):
        s_out[j] = u_all[order[j]]
        pr[j] = pr_all[order[j]]
        pc[j] = pc_all[order[j]]
    closing = np.empty(n)
    rc = int(math.ceil(half + fill))
    _closing_at(img, pr, pc, n, rc, _GAUSS, closing)
    q = np.empty(n)
    in_win = np.empty(n, np.bool_)
    for j in range(n):
        val = img[pr[j], pc[j]]
        ok_j = (not bad[pr[j], pc[j]]) and closing[j] > 0.0
        q[j] = val / closing[j] if ok_j else np.nan
        in_win[j] = ok_j and math.isfinite(q[j])
    left = np.empty(n, np.bool_)
    right = np.empty(n, np.bool_)
    n_inner = 0
    for j in range(n):
        is_wall = in_win[j] and abs(s_out[j]) > h_in
        left[j] = is_wall and s_out[j] < 0
        right[j] = is_wall and s_out[j] > 0
        if in_win[j] and abs(s_out[j]) <= h_in:
            n_inner += 1
    buf = np.empty(n)
    level, slope = wall_line(q, s_out, left, right, n, buf)
    density = 2.0 * strip_half
    good = math.isfinite(level) and level > 0.0 and n_inner >= density * (2.0 * half + 2.0)
    for j in range(n):
        wall = level + slope * s_out[j]  # the line may reach 0 far out on a dark wall
        w_out[j] = 1.0 if (in_win[j] and good and wall > 0.0) else 0.0
        d_out[j] = 1.0 - q[j] / wall if w_out[j] > 0 else 0.0
    # noise: robust spread of the darkness on the wall stretches
    nw = 0
    for j in range(n):
        if left[j] or right[j]:
            buf[nw] = d_out[j] if good else 0.0
            nw += 1
    nz = np.nan
    if nw > 0:
        med = median_of(buf, nw)
        for j in range(nw):
            buf[j] = abs(buf[j] - med)
        nz = 1.4826 * median_of(buf, nw)
    nz = max(nz, 1e-3) if math.isfinite(nz) else 1e-2
    # start values from the moments of the inner darkness (pixels sorted by offset)
    area = 0.0
    first = 0.0
    win = max(int(density), 1)
    din = np.zeros(n)
    for j in range(n):
        if in_win[j] and abs(s_out[j]) <= h_in and good:
            din[j] = d_out[j]
            area += din[j]
            first += din[j] * s_out[j]
    area /= density
    peak = 0.0
    for j in range(n):  # running mean of `win` values, reflected at the ends (scipy's default)
        acc = 0.0
        for t in range(j - win // 2, j - win // 2 + win):
            tt = t
            if tt < 0:
                tt = -tt - 1
            if tt >= n:
                tt = 2 * n - tt - 1
            tt = min(max(tt, 0), n - 1)
            acc += din[tt]
        peak = max(peak, acc / win)
    k0 = min(max(peak, 0.02), 1.0)
    cen0 = first / density / max(area, 1e-9) if area > 0 else 0.0
    theta0[0] = k0
    theta0[1] = min(max(area / k0, 0.2), 2.0 * h_in)
    theta0[2] = min(max(cen0, -h_in), h_in)
    theta0[3] = max(sig_start, 0.8) * 0.75
    lower[0], lower[1], lower[2], lower[3] = 1e-3, 0.02, -h_in, 0.2
    upper[0], upper[1], upper[2], upper[3] = 1.0, 2.0 * h_in + 1.0, h_in, 3.0
    # The fit sees the band, its tails and `fit_margin` px of wall beyond them; the rest of the
    # wall stretches only level the wall and give the noise. The points are sorted by offset,
    # so the fitted ones are a run, moved to the front (the rest: zero weight); `n_used` counts
    # the fitted points' weights.
    j0 = 0
    while j0 < n and s_out[j0] < -(h_in + fit_margin):
        j0 += 1
    j1 = n
    while j1 > j0 and s_out[j1 - 1] > h_in + fit_margin:
        j1 -= 1
    n_used = 0.0
    for j in range(j0, j1):
        s_out[j - j0] = s_out[j]
        d_out[j - j0] = d_out[j]
        w_out[j - j0] = w_out[j]
        n_used += w_out[j]
    for j in range(j1 - j0, n):
        s_out[j] = 0.0
        d_out[j] = 0.0
        w_out[j] = 0.0
    return good, j1 - j0, nz, max(n_used, 1.0)


@kernel()
def take_profiles(
    img: NDArray[np.float64],
    bad: NDArray[np.bool_],
    r0: NDArray[np.float64],
    c0: NDArray[np.float64],
    nrm: NDArray[np.float64],
    tail: float,
    max_width: float,
    search: float,
    wall_px: float,
    fit_margin: float,
    strip_half: float,
    fill: float,
    sig_start: float,
    significant: float,
    tab: NDArray[np.float64],
):  # pragma: no cover
    """Locate the band and take the profile at every sample (see :func:`strip_profile`).

    Returns ``ok, centre, half, s, darkness, weight, n_points, noise, n_used, theta0, lower,
    upper``; the profile arrays are ``(n, K)``, padded with zero weight.
    """
    n = r0.size
    centre = np.zeros(n)
    half = np.zeros(n)
    found = np.zeros(n, np.bool_)
    cap = 1
    for i in range(n):
        centre[i], half[i], found[i] = locate_band(
            img,
            bad,
            r0[i],
            c0[i],
            nrm[i, 0],
            nrm[i, 1],
            tail,
            max_width,
            search,
            wall_px,
            significant,
        )
        if found[i]:
            h_out = half[i] + tail + wall_px
            cap = max(cap, int((2.0 * h_out + 3.0) * (2.0 * strip_half + 3.0)))
    s = np.zeros((n, cap))
    d = np.zeros((n, cap))
    wt = np.zeros((n, cap))
    m = np.zeros(n, np.int64)
    noise = np.full(n, np.nan)
    n_used = np.full(n, np.nan)
    theta0 = np.zeros((n, 4))
    lower = np.zeros((n, 4))
    upper = np.zeros((n, 4))
    ok = np.zeros(n, np.bool_)
    for i in range(n):
        if not found[i]:
            continue
        ok[i], m[i], noise[i], n_used[i] = strip_profile(
            img,
            bad,
            r0[i],
            c0[i],
            nrm[i, 0],
            nrm[i, 1],
            centre[i],
            half[i],
            tail,
            strip_half,
            wall_px,
            fit_margin,
            fill,
            sig_start,
            s[i],
            d[i],
            wt[i],
            theta0[i],
            lower[i],
            upper[i],
            tab,
        )
    return ok, centre, half, s, d, wt, m, noise, n_used, theta0, lower, upper
