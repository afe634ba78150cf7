"""Sparse skeleton pixels: neighbours within a radius, components, samples, normals.

Compiled (numba) helpers of :mod:`cracksurvey.measure.width_profile`, on lists of pixels rather
than images: a grid hash finds the points within a radius of each query, with the same label
(the same crack); :func:`local_minima` picks well-spread samples; :func:`pixel_components` labels
8-connected cracks; :func:`pca_normals` gives the local normal.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from ._jit import kernel

__all__ = ["local_minima", "nearest", "neighbours", "pca_normals", "pixel_components"]


@kernel()
def neighbours(
    qr: NDArray[np.float64],
    qc: NDArray[np.float64],
    qlab: NDArray[np.int64],
    pr: NDArray[np.float64],
    pc: NDArray[np.float64],
    plab: NDArray[np.int64],
    radius: float,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:  # pragma: no cover
    """Points ``p`` within ``radius`` of each query ``q`` with the same label (CSR lists).

    Returns ``indptr`` (n_q + 1,) and ``indices``: the neighbours of query ``i`` are
    ``indices[indptr[i]:indptr[i + 1]]``, in increasing index order.
    """
    n_p = pr.size
    n_q = qr.size
    cell = max(radius, 1e-9)
    kr = np.empty(n_p, np.int64)
    kc = np.empty(n_p, np.int64)
    for i in range(n_p):
        kr[i] = int(math.floor(pr[i] / cell))
        kc[i] = int(math.floor(pc[i] / cell))
    lo_r = kr.min() if n_p else 0
    lo_c = kc.min() if n_p else 0
    span = (kc.max() - lo_c + 3) if n_p else 1
    key = (kr - lo_r + 1) * span + (kc - lo_c + 1)
    order = np.argsort(key, kind="mergesort")
    sk = key[order]
    r2 = radius * radius
    counts = np.zeros(n_q, np.int64)
    out = np.empty(max(16, 8 * n_q), np.int64)
    n_out = 0
    buf = np.empty(n_p, np.int64)
    for i in range(n_q):
        cr = int(math.floor(qr[i] / cell)) - lo_r + 1
        cc = int(math.floor(qc[i] / cell)) - lo_c + 1
        nb = 0
        for dr in range(-1, 2):
            for dc in range(-1, 2):
                if cc + dc < 0 or cc + dc >= span or cr + dr < 0:
                    continue
                k = (cr + dr) * span + (cc + dc)
                a = np.searchsorted(sk, k)
                while a < n_p and sk[a] == k:
                    j = order[a]
                    if plab[j] == qlab[i]:
                        d0 = pr[j] - qr[i]
                        d1 = pc[j] - qc[i]
                        if d0 * d0 + d1 * d1 <= r2:
                            buf[nb] = j
                            nb += 1
                    a += 1
        if n_out + nb > out.size:
            grown = np.empty(max(2 * out.size, n_out + nb), np.int64)
            grown[:n_out] = out[:n_out]
            out = grown
        srt = np.sort(buf[:nb])
        out[n_out : n_out + nb] = srt
        n_out += nb
        counts[i] = nb
    indptr = np.zeros(n_q + 1, np.int64)
    indptr[1:] = np.cumsum(counts)
    return indptr, out[:n_out].copy()


@kernel()
def pixel_components(rows: NDArray[np.int64], cols: NDArray[np.int64]) -> NDArray[np.int64]:
    """8-connected components of sparse pixels (union-find); labels 0..n_components-1.

    Labels are numbered in the order of each component's first pixel in the input.
    """  # pragma: no cover
    n = rows.size
    parent = np.arange(n)
    if n == 0:
        return parent
    c0 = cols.min() - 1
    span = cols.max() - c0 + 2
    lin = (rows - rows.min()) * span + (cols - c0)
    order = np.argsort(lin, kind="mergesort")
    sl = lin[order]
    for t in range(n):
        i = order[t]
        for off in (1, span - 1, span, span + 1):  # E, SW, S, SE
            a = np.searchsorted(sl, sl[t] + off)
            if a < n and sl[a] == sl[t] + off:
                j = order[a]
                ri, rj = i, j
                while parent[ri] != ri:
                    ri = parent[ri]
                while parent[rj] != rj:
                    rj = parent[rj]
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    labels = np.full(n, -1, np.int64)
    next_label = 0
    for i in range(n):
        r = i
        while parent[r] != r:
            r = parent[r]
        parent[i] = r
        if labels[r] < 0:
            labels[r] = next_label
            next_label += 1
        labels[i] = labels[r]
    return labels


@kernel()
def local_minima(
    r: NDArray[np.float64],
    c: NDArray[np.float64],
    lab: NDArray[np.int64],
    key: NDArray[np.int64],
    radii: NDArray[np.float64],
) -> NDArray[np.bool_]:  # pragma: no cover
    """For each radius, the points whose ``key`` is the smallest of the points of the same
    label within it (equal keys: the first in the input); ``(len(radii), n)``."""
    indptr, indices = neighbours(r, c, lab, r, c, lab, radii.max())
    out = np.ones((radii.size, r.size), np.bool_)
    for i in range(r.size):
        for t in range(indptr[i], indptr[i + 1]):
            j = indices[t]
            if j == i or not (key[j] < key[i] or (key[j] == key[i] and j < i)):
                continue
            d2 = (r[j] - r[i]) ** 2 + (c[j] - c[i]) ** 2
            for q in range(radii.size):
                if d2 <= radii[q] ** 2:
                    out[q, i] = False
    return out


@kernel()
def nearest(
    qr: NDArray[np.float64],
    qc: NDArray[np.float64],
    qlab: NDArray[np.int64],
    pr: NDArray[np.float64],
    pc: NDArray[np.float64],
    plab: NDArray[np.int64],
    radius: float,
) -> NDArray[np.int64]:  # pragma: no cover
    """Index of the nearest point ``p`` with the same label within ``radius`` of each query.

    -1: none; ties go to the point first in (row, col) order, whatever the points' order.
    """
    indptr, indices = neighbours(qr, qc, qlab, pr, pc, plab, radius)
    n_q = qr.size
    out = np.full(n_q, -1, np.int64)
    for i in range(n_q):
        best = np.inf
        for t in range(indptr[i], indptr[i + 1]):
            j = indices[t]
            d2 = (pr[j] - qr[i]) ** 2 + (pc[j] - qc[i]) ** 2
            k = out[i]
            tie = d2 == best and (pr[j] < pr[k] or (pr[j] == pr[k] and pc[j] < pc[k]))
            if d2 < best or tie:
                best = d2
                out[i] = j
    return out


@kernel()
def pca_normals(
    qr: NDArray[np.float64],
    qc: NDArray[np.float64],
    pr: NDArray[np.float64],
    pc: NDArray[np.float64],
    indptr: NDArray[np.int64],
    indices: NDArray[np.int64],
) -> NDArray[np.float64]:  # pragma: no cover
    """Unit normals from the principal axis of each query's neighbours; ``(1, 0)`` if alone."""
    n = qr.size
    out = np.zeros((n, 2))
    for i in range(n):
        a, b = indptr[i], indptr[i + 1]
        cnt = b - a
        if cnt < 2:
            out[i, 0] = 1.0
            continue
        sr = sc = srr = scc = src = 0.0
        for t in range(a, b):
            j = indices[t]
            dr = pr[j] - qr[i]
            dc = pc[j] - qc[i]
            sr += dr
            sc += dc
            srr += dr * dr
            scc += dc * dc
            src += dr * dc
        m_r, m_c = sr / cnt, sc / cnt
        cov_rr = srr / cnt - m_r * m_r
        cov_cc = scc / cnt - m_c * m_c
        cov_rc = src / cnt - m_r * m_c
        theta = 0.5 * math.atan2(2.0 * cov_rc, cov_rr - cov_cc)
        out[i, 0] = -math.sin(theta)
        out[i, 1] = math.cos(theta)
    return out
