"""Where the dark band lies on the normal through a crack sample (the image-based width).

Compiled (numba), one sample at a time, for :mod:`cracksurvey.measure.width_profile`:
:func:`locate_band` finds the band's centre and half-width on a coarse profile along the
normal; :mod:`cracksurvey.measure.profile_strip` then takes the fine profile across it.
Coordinates: ``(row, col)``, pixel centres at integers; the image is a tile in memory.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from ._jit import kernel

__all__ = ["locate_band", "median_of", "wall_line"]


# --------------------------------------------------------------------------------------------
# Image access
# --------------------------------------------------------------------------------------------
@kernel(inline="always")
def _keys(t: float) -> float:  # pragma: no cover
    """Keys' cubic convolution kernel (a = -0.5)."""
    t = abs(t)
    if t < 1.0:
        return (1.5 * t - 2.5) * t * t + 1.0
    if t < 2.0:
        return ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0
    return 0.0


@kernel()
def _cubic(img: NDArray[np.float64], r: float, c: float) -> float:  # pragma: no cover
    """Bicubic (Keys) value at ``(r, c)``; indices clamped to the image."""
    h, w = img.shape
    ir = int(math.floor(r))
    ic = int(math.floor(c))
    acc = 0.0
    for a in range(-1, 3):
        rr = min(max(ir + a, 0), h - 1)
        wr = _keys(r - (ir + a))
        row = 0.0
        for b in range(-1, 3):
            cc = min(max(ic + b, 0), w - 1)
            row += _keys(c - (ic + b)) * img[rr, cc]
        acc += wr * row
    return acc


@kernel(inline="always")
def _usable(bad: NDArray[np.bool_], r: float, c: float) -> bool:  # pragma: no cover
    """Inside the image and none of the four surrounding pixels flagged."""
    h, w = bad.shape
    if r < 0.0 or c < 0.0 or r > h - 1 or c > w - 1:
        return False
    ir = min(int(r), h - 2) if h > 1 else 0
    ic = min(int(c), w - 2) if w > 1 else 0
    return not (
        bad[ir, ic]
        or bad[ir, min(ic + 1, w - 1)]
        or bad[min(ir + 1, h - 1), ic]
        or bad[min(ir + 1, h - 1), min(ic + 1, w - 1)]
    )


@kernel()
def median_of(values: NDArray[np.float64], n: int) -> float:  # pragma: no cover
    """Median of ``values[:n]`` (NaN for none); reorders ``values[:n]`` in place."""
    if n == 0:
        return np.nan
    if n <= 24:  # insertion sort: no allocation for the short wall stretches
        for i in range(1, n):
            v = values[i]
            j = i - 1
            while j >= 0 and values[j] > v:
                values[j + 1] = values[j]
                j -= 1
            values[j + 1] = v
        h = n // 2
        return float(values[h]) if n % 2 else 0.5 * float(values[h - 1] + values[h])
    return float(np.median(values[:n]))


@kernel()
def wall_line(
    v: NDArray[np.float64],
    s: NDArray[np.float64],
    left: NDArray[np.bool_],
    right: NDArray[np.bool_],
    m: int,
    buf: NDArray[np.float64],
) -> tuple[float, float]:  # pragma: no cover
    """Line (level at s = 0, slope) through the medians of ``v`` on the two sides.

    One side missing: a constant at the other side's median; both missing: NaN.
    """
    nl = 0
    sl = 0.0
    for j in range(m):
        if left[j]:
            buf[nl] = v[j]
            sl += s[j]
            nl += 1
    m_l = median_of(buf, nl)
    nr = 0
    sr = 0.0
    for j in range(m):
        if right[j]:
            buf[nr] = v[j]
            sr += s[j]
            nr += 1
    m_r = median_of(buf, nr)
    if nl > 0 and nr > 0:
        s_l, s_r = sl / nl, sr / nr
        slope = (m_r - m_l) / (s_r - s_l) if s_r != s_l else 0.0
        return 0.5 * (m_l + m_r) - slope * 0.5 * (s_l + s_r), slope
    if nl > 0:
        return m_l, 0.0
    return m_r, 0.0


@kernel()
def _far_median(
    p: NDArray[np.float64],
    s: NDArray[np.float64],
    valid: NDArray[np.bool_],
    m: int,
    beyond: float,
    side: float,
    buf: NDArray[np.float64],
) -> float:  # pragma: no cover
    """Median of the valid ``p`` at ``side * s >= beyond`` (one end of the profile)."""
    n = 0
    for j in range(m):
        if valid[j] and side * s[j] >= beyond:
            buf[n] = p[j]
            n += 1
    return median_of(buf, n)


# --------------------------------------------------------------------------------------------
# Band location on a coarse profile
# --------------------------------------------------------------------------------------------
_STARTS = np.array([0.5, 1.5, 3.0, 6.0, 10.0, 15.0, 20.0, 30.0])


@kernel()
def _locate_on(
    img: NDArray[np.float64],
    bad: NDArray[np.bool_],
    r0: float,
    c0: float,
    nr: float,
    nc: float,
    tail: float,
    max_width: float,
    search: float,
    wall_px: float,
    significant: float,
    reach: float,
    h0_max: float,
) -> tuple[float, float, bool, bool]:  # pragma: no cover
    """:func:`locate_band` on a profile reaching ``reach`` px, from starts up to ``h0_max``.

    Returns ``(centre, half, found, chosen)``; ``chosen``: a band stood out.
    """
    step = 0.5
    half_m = int(math.ceil(reach / step))
    m = 2 * half_m + 1
    s = np.empty(m)
    p = np.empty(m)
    valid = np.empty(m, np.bool_)
    for j in range(m):
        s[j] = (j - half_m) * step
        rr = r0 + nr * s[j]
        cc = c0 + nc * s[j]
        valid[j] = _usable(bad, rr, cc)
        p[j] = _cubic(img, rr, cc)
    mid = half_m
    if not valid[mid]:
        return 0.0, 0.0, False, True
    ps = np.empty(m)  # 3-tap running mean, nearest at the ends, invalid points as 0
    for j in range(m):
        acc = 0.0
        for q in (j - 1, j, j + 1):
            qq = min(max(q, 0), m - 1)
            acc += p[qq] if valid[qq] else 0.0
        ps[j] = acc / 3.0
    k_reach = min(int(round(search / step)), mid)
    best = np.inf
    start = 0.0
    for j in range(mid - k_reach, mid + k_reach + 1):
        if valid[j] and ps[j] < best:
            best = ps[j]
            start = s[j]
    # Noise of the darkness from the pixel-to-pixel differences (one value per pixel).
    buf = np.empty(m)
    nd = 0
    for j in range(2, m, 2):
        if valid[j] and valid[j - 2]:
            buf[nd] = abs(p[j] - p[j - 2])
            nd += 1
    md = median_of(buf, nd)
    nv = 0
    for j in range(m):
        if valid[j]:
            buf[nv] = p[j]
            nv += 1
    mp = median_of(buf, nv)
    nz = 1.4826 * md / math.sqrt(2.0) / mp if (nd > 0 and mp != 0.0) else 0.0
    if not math.isfinite(nz):
        nz = 0.0
    dark = np.empty(m)
    left = np.empty(m, np.bool_)
    right = np.empty(m, np.bool_)
    first_found = -1
    f_centre = 0.0
    f_half = 0.0
    f_pk = 0.0
    chosen = False
    centre = 0.0
    half = 0.0
    pk = 0.0
    for si in range(_STARTS.size):
        h0 = _STARTS[si]
        if h0 > 0.5 * max_width or h0 > h0_max:
            break
        centre = start
        half = h0
        found = False
        pk = 0.0
        level = np.nan
        for _ in range(4):
            edge = half + tail
            for j in range(m):
                rel = s[j] - centre
                left[j] = valid[j] and rel < -edge and rel >= -edge - wall_px
                right[j] = valid[j] and rel > edge and rel <= edge + wall_px
            level, slope = wall_line(p, s, left, right, m, buf)
            i_pk = -1
            pk = -np.inf
            for j in range(m):
                wall = level + slope * s[j]
                dark[j] = 1.0 - ps[j] / wall if (valid[j] and wall > 0.0) else 0.0
                if abs(s[j] - centre) <= half + 1.0 and dark[j] > pk:
                    pk = dark[j]
                    i_pk = j
            if i_pk < 0:
                i_pk = 0
                pk = dark[0]
            i_hi = m
            for j in range(i_pk + 1, m):
                if dark[j] < 0.5 * pk:
                    i_hi = j
                    break
            i_lo = -1
            for j in range(i_pk - 1, -1, -1):
                if dark[j] < 0.5 * pk:
                    i_lo = j
                    break
            e_lo = s[min(max(i_lo, 0), m - 1)] + step / 2
            e_hi = s[min(max(i_hi, 0), m - 1)] - step / 2
            new_c = 0.5 * (e_lo + e_hi)
            new_h = min(max(0.5 * (e_hi - e_lo), 0.25), max_width)
            found = i_lo >= 0 and i_hi < m and pk > 0 and math.isfinite(level)
            found = found and abs(new_c) <= search + new_h
            if found:
                centre = new_c
                half = new_h
        if found and h0 > 1.0:
            # From a wide start both walls must be brighter than the band.
            edge = half + tail
            nl = nr_ = ni = 0
            vl = np.empty(m)
            vr = np.empty(m)
            vi = np.empty(m)
            inner_h = max(0.5 * half, 0.5)
            for j in range(m):
                if not valid[j]:
                    continue
                rel = s[j] - centre
                if rel < -edge and rel >= -edge - wall_px:
                    vl[nl] = p[j]
                    nl += 1
                elif rel > edge and rel <= edge + wall_px:
                    vr[nr_] = p[j]
                    nr_ += 1
                if abs(rel) <= inner_h:
                    vi[ni] = p[j]
                    ni += 1
            m_l, m_r, inner = median_of(vl, nl), median_of(vr, nr_), median_of(vi, ni)
            top = max(m_l, m_r)  # 0 on a black wall: no lift to measure
            lift = (min(m_l, m_r) - inner) / top if top > 0.0 else math.nan
            if math.isfinite(lift) and lift < 0.4 * pk:
                found = False
        if found and first_found < 0:
            first_found = si
            f_centre, f_half, f_pk = centre, half, pk
        if found and pk >= max(significant * nz, 0.03):
            chosen = True
            break
    if not chosen:
        if h0_max < 0.5 * max_width:
            return 0.0, 0.0, False, False
        if first_found < 0:
            return 0.0, 0.0, False, False
        centre, half, pk = f_centre, f_half, f_pk
        # No band stands out, yet the sample is darker than the profile's far ends on both
        # sides: it lies inside a band too wide to measure.
        far_l = _far_median(p, s, valid, m, reach - wall_px, -1.0, buf)
        far_r = _far_median(p, s, valid, m, reach - wall_px, 1.0, buf)
        far = min(far_l, far_r)
        dark_far = 1.0 - ps[mid] / far if far > 0.0 else math.nan
        if (
            math.isfinite(dark_far)
            and dark_far > max(significant * nz, 0.05)
            and dark_far > 2.0 * pk
        ):
            return centre, half, False, False
    for j in range(m):
        if abs(s[j] - centre) <= half and not valid[j]:
            return centre, half, False, chosen
    return centre, half, 2.0 * half <= max_width, chosen


@kernel()
def locate_band(
    img: NDArray[np.float64],
    bad: NDArray[np.bool_],
    r0: float,
    c0: float,
    nr: float,
    nc: float,
    tail: float,
    max_width: float,
    search: float,
    wall_px: float,
    significant: float,
) -> tuple[float, float, bool]:  # pragma: no cover
    """Centre and half-width (pixels, along the normal) of the dark band near a sample.

    On a coarse profile (step 0.5 px, Keys cubic), from a starting half-width, repeat four
    times: the wall is the line through the medians of the profile over ``wall_px`` beyond the
    band's blurred tails on each side, and the band runs from its darkest point near the
    sample out to half that darkness. Starts from half a pixel up to ``max_width / 2``; the
    first whose band stands out of the noise (over ``significant`` times the profile's noise
    and 0.03; from a wide start, with both walls brighter than the band) wins; if none does,
    the first band found (a faint crack), unless the sample is clearly darker than the wall
    at the profile's ends on both sides (inside a band too wide to measure). A short profile
    (starts up to 3 px) is tried first, the full one (``max_width`` beyond the tails) only
    when no band stands out on it. Returns ``(centre, half, found)``.
    """
    h0_short = 3.0
    short = h0_short + tail + wall_px + search + 4.0
    full = max_width + tail + wall_px + 2.0
    if short < full:
        c, h, f, chosen = _locate_on(
            img,
            bad,
            r0,
            c0,
            nr,
            nc,
            tail,
            max_width,
            search,
            wall_px,
            significant,
            short,
            h0_short,
        )
        if chosen:
            return c, h, f
    c, h, f, _ = _locate_on(
        img, bad, r0, c0, nr, nc, tail, max_width, search, wall_px, significant, full, 1e9
    )
    return c, h, f
