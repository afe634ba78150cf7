"""TOPO loss (windowed MALIS region-separation loss), docs/method.md "Losses", clean-room.

All windows of a batch are processed in ONE compiled (numba) call per loss evaluation, windows in
parallel (``prange``), both passes inside, with the closed-form normalisers

    Z_n = sum_{a<b} |R_a| |R_b|        Z_p = sum_a |R_a| (|R_a| - 1) / 2

(the window graph is connected, so every labelled pair is merged exactly once).

Per window (side ``window_px``, grid from (0, 0); remainder rows/cols get no weight, as in the
authors' code, kept knowingly):

1. 4-connected graph, horizontal edges first then vertical, each block row-major;
   edge value a(e) = ŷ(u) + ŷ(v), GT value g(e) = y(u) + y(v) (float32 sums);
2. GT regions: S = {y == 0} dilated ``band_iterations`` times by a 3x3 cross inside the window
   (outside counts as background), complement labelled with 8-connectivity; band pixels are
   unlabelled and ignored;
3. negative pass: a_n = pin if g > near else a; pairs with different labels counted on the
   maximum-spanning-tree edge that merges them; weights kept where g < near;
   positive pass: a_p = 0 if g < core else a; pairs with the same label; kept where g > near;
4. edge weights normalised per window and pass, added to both endpoints.

``faithful=True`` pins far edges of the negative pass to ``clip_px`` (the authors' value — docs/method.md D6:
edges are sums, so band edges with ŷ-sum > clip sort before the pinned ones and long gaps get no
weight). The default ``faithful=False`` pins them to +inf, so long gaps get gradient.

Tie rule (D8): edges are sorted by decreasing value with a STABLE sort, so among equal values the
edge with the smaller index (horizontal before vertical, row-major) is processed first. The same
inputs always give the same weights.

The loss: L = alpha * sum W_n ŷ² + beta * sum W_p (clip - ŷ)², summed over pixels and windows;
``reduction='sum'`` also sums over the batch (the authors', D10), ``'mean'`` divides by the batch
size (our default, so the scale does not depend on the batch size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np
import torch
from numba import njit, prange


@njit(cache=True)
def _window_edges(ws: int) -> tuple[np.ndarray, np.ndarray]:
    n_h = ws * (ws - 1)
    n_e = 2 * n_h
    u = np.empty(n_e, np.int64)
    v = np.empty(n_e, np.int64)
    k = 0
    for r in range(ws):  # horizontal edges, row-major
        for c in range(ws - 1):
            u[k] = r * ws + c
            v[k] = r * ws + c + 1
            k += 1
    for r in range(ws - 1):  # vertical edges, row-major
        for c in range(ws):
            u[k] = r * ws + c
            v[k] = (r + 1) * ws + c
            k += 1
    return u, v


@njit(cache=True)
def _window_labels(yw: np.ndarray, band_iterations: int) -> tuple[np.ndarray, int]:
    """Region labels (flat, 0 = band) of one window's target and their count."""
    ws = yw.shape[0]
    band = np.zeros((ws, ws), np.bool_)
    n_centre = 0
    for r in range(ws):
        for c in range(ws):
            if yw[r, c] == 0.0:
                band[r, c] = True
                n_centre += 1
    if n_centre == 0:  # no crack in the window: one region, no dilation needed
        return np.ones(ws * ws, np.int64), 1
    for _ in range(band_iterations):
        new = band.copy()
        for r in range(ws):
            for c in range(ws):
                if band[r, c]:
                    if r > 0:
                        new[r - 1, c] = True
                    if r < ws - 1:
                        new[r + 1, c] = True
                    if c > 0:
                        new[r, c - 1] = True
                    if c < ws - 1:
                        new[r, c + 1] = True
        band = new
    labels = np.zeros(ws * ws, np.int64)
    stack = np.empty(ws * ws, np.int64)
    n_labels = 0
    for start in range(ws * ws):
        r0, c0 = start // ws, start % ws
        if band[r0, c0] or labels[start] != 0:
            continue
        n_labels += 1
        labels[start] = n_labels
        top = 0
        stack[top] = start
        top += 1
        while top > 0:
            top -= 1
            p = stack[top]
            pr, pc = p // ws, p % ws
            for dr in range(-1, 2):
                for dc in range(-1, 2):
                    rr, cc = pr + dr, pc + dc
                    if rr < 0 or rr >= ws or cc < 0 or cc >= ws:
                        continue
                    q = rr * ws + cc
                    if band[rr, cc] or labels[q] != 0:
                        continue
                    labels[q] = n_labels
                    stack[top] = q
                    top += 1
    return labels, n_labels


@njit(cache=True)
def _find(parent: np.ndarray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@njit(cache=True)
def descending_order(values: np.ndarray) -> np.ndarray:
    """Indices that sort float32 ``values`` in decreasing order, ties by increasing index.

    An LSD radix sort (4 stable passes of 8 bits) on order-preserving integer keys: exact, stable
    and several times faster than a comparison sort for the ~2000 edges of a window.
    """
    n = values.shape[0]
    bits = values.view(np.uint32)
    keys = np.empty(n, np.uint32)
    for i in range(n):
        b = bits[i]
        if b == np.uint32(0x80000000):  # -0.0 ties with +0.0, as in a comparison sort
            b = np.uint32(0)
        # order-preserving map float -> uint (ascending), then inverted for descending order
        k = (~b) if (b >> np.uint32(31)) else (b | np.uint32(0x80000000))
        keys[i] = ~k
    order = np.arange(n)
    tmp = np.empty(n, np.int64)
    counts = np.empty(257, np.int64)
    for shift in range(0, 32, 8):
        counts[:] = 0
        for i in range(n):
            counts[((keys[order[i]] >> np.uint32(shift)) & np.uint32(255)) + 1] += 1
        for j in range(256):
            counts[j + 1] += counts[j]
        for i in range(n):
            d = (keys[order[i]] >> np.uint32(shift)) & np.uint32(255)
            tmp[counts[d]] = order[i]
            counts[d] += 1
        order, tmp = tmp, order
    return order


@njit(cache=True)
def pair_counts(
    affinity: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    u: np.ndarray,
    v: np.ndarray,
    positive: bool,
) -> np.ndarray:
    """Per-edge pair counts of one graph (MALIS, §4.5): Kruskal in decreasing affinity.

    Stable tie-break: equal affinities are processed in increasing edge index.
    """
    n = labels.shape[0]
    n_e = affinity.shape[0]
    counts = np.zeros(n_e, np.float64)
    order = descending_order(affinity)
    parent = np.arange(n)
    rank = np.zeros(n, np.int64)
    bags = np.zeros((n, n_labels + 1), np.int64)
    for i in range(n):
        if labels[i] > 0:
            bags[i, labels[i]] = 1
    for k in range(n_e):
        e = order[k]
        ra = _find(parent, u[e])
        rb = _find(parent, v[e])
        if ra == rb:
            continue
        same = 0
        tot_a = 0
        tot_b = 0
        for lab in range(1, n_labels + 1):
            same += bags[ra, lab] * bags[rb, lab]
            tot_a += bags[ra, lab]
            tot_b += bags[rb, lab]
        counts[e] = same if positive else tot_a * tot_b - same
        if rank[ra] < rank[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        if rank[ra] == rank[rb]:
            rank[ra] += 1
        for lab in range(1, n_labels + 1):
            bags[ra, lab] += bags[rb, lab]
    return counts


@njit(parallel=True, cache=True)
def _topo_weights(
    pred: np.ndarray,
    target: np.ndarray,
    window_px: int,
    pin_negative: float,
    near: float,
    core: float,
    band_iterations: int,
) -> tuple[np.ndarray, np.ndarray]:
    n_img, height, width = pred.shape
    n_wr = height // window_px
    n_wc = width // window_px
    n_win = n_img * n_wr * n_wc
    w_neg = np.zeros(pred.shape, np.float32)
    w_pos = np.zeros(pred.shape, np.float32)
    u, v = _window_edges(window_px)
    n_e = u.shape[0]
    for k in prange(n_win):
        b = k // (n_wr * n_wc)
        rem = k % (n_wr * n_wc)
        r0 = (rem // n_wc) * window_px
        c0 = (rem % n_wc) * window_px
        yw = target[b, r0 : r0 + window_px, c0 : c0 + window_px]
        pw = pred[b, r0 : r0 + window_px, c0 : c0 + window_px]
        labels, n_labels = _window_labels(yw, band_iterations)
        if n_labels == 0:
            continue
        yf = yw.ravel()
        pf = pw.ravel()
        a = np.empty(n_e, np.float32)
        g = np.empty(n_e, np.float32)
        for e in range(n_e):
            a[e] = np.float32(pf[u[e]] + pf[v[e]])
            g[e] = np.float32(yf[u[e]] + yf[v[e]])
        sizes = np.zeros(n_labels + 1, np.float64)
        for i in range(labels.shape[0]):
            sizes[labels[i]] += 1.0
        n_lab = 0.0
        sq = 0.0
        z_pos = 0.0
        for lab in range(1, n_labels + 1):
            n_lab += sizes[lab]
            sq += sizes[lab] * sizes[lab]
            z_pos += sizes[lab] * (sizes[lab] - 1.0) / 2.0
        z_neg = (n_lab * n_lab - sq) / 2.0
        if z_neg > 0:
            a_n = np.where(g > near, np.float32(pin_negative), a)
            c_n = pair_counts(a_n, labels, n_labels, u, v, False)
            for e in range(n_e):
                if c_n[e] > 0 and g[e] < near:
                    wgt = np.float32(c_n[e] / z_neg)
                    pu, pv = u[e], v[e]
                    w_neg[b, r0 + pu // window_px, c0 + pu % window_px] += wgt
                    w_neg[b, r0 + pv // window_px, c0 + pv % window_px] += wgt
        if z_pos > 0:
            a_p = np.where(g < core, np.float32(0.0), a)
            c_p = pair_counts(a_p, labels, n_labels, u, v, True)
            for e in range(n_e):
                if c_p[e] > 0 and g[e] > near:
                    wgt = np.float32(c_p[e] / z_pos)
                    pu, pv = u[e], v[e]
                    w_pos[b, r0 + pu // window_px, c0 + pu % window_px] += wgt
                    w_pos[b, r0 + pv // window_px, c0 + pv % window_px] += wgt
    return w_neg, w_pos


@dataclass(frozen=True)
class TopoParams:
    """Constants of the TOPO loss (docs/method.md, "Losses")."""

    alpha: float = 100.0  # malis_neg: weight of the negative ("separate") pass
    beta: float = 10.0  # malis_pos: weight of the positive ("join") pass
    clip_px: float = 20.0
    window_px: int = 32
    near: float = 10.0  # GT edge-sum threshold: far edges (g > near) pinned / positive-eligible
    core: float = 5.0  # GT edge-sum threshold: core crack edges (g < core) pinned to 0
    band_iterations: int = 5
    faithful: bool = False  # True reproduces the authors' pinning (D6: far edges to clip_px)
    reduction: Literal["sum", "mean"] = "mean"


def topo_weights(
    pred: np.ndarray, target: np.ndarray, params: TopoParams = TopoParams()
) -> tuple[np.ndarray, np.ndarray]:
    """Node weights of both passes for a batch.

    Parameters
    ----------
    pred, target : ndarray of shape (B, H, W), float32, pixels
        Predicted and ground-truth clipped distance maps.

    Returns
    -------
    w_neg, w_pos : ndarray of shape (B, H, W), float32
    """
    pred = np.ascontiguousarray(pred, np.float32)
    target = np.ascontiguousarray(target, np.float32)
    if pred.ndim != 3 or pred.shape != target.shape:
        raise ValueError(
            f"expected pred and target of shape (B, H, W), got {pred.shape}, {target.shape}"
        )
    pin = params.clip_px if params.faithful else np.inf
    return _topo_weights(
        pred, target, params.window_px, pin, params.near, params.core, params.band_iterations
    )


def topo_loss(
    pred: torch.Tensor, target: torch.Tensor, params: TopoParams = TopoParams()
) -> torch.Tensor:
    """The TOPO loss of a batch; weights are constants, computed on the CPU, moved to pred's device.

    Parameters
    ----------
    pred, target : Tensor of shape (B, 1, H, W) or (B, H, W), pixels
    """
    if pred.ndim == 4:
        pred = pred[:, 0]
        target = target[:, 0]
    pred = pred.float()
    w_neg, w_pos = topo_weights(
        pred.detach().cpu().numpy(), target.detach().float().cpu().numpy(), params
    )
    w_neg_t = torch.from_numpy(w_neg).to(pred.device, non_blocking=True)
    w_pos_t = torch.from_numpy(w_pos).to(pred.device, non_blocking=True)
    loss = (
        params.alpha * (w_neg_t * pred.square()).sum()
        + params.beta * (w_pos_t * (params.clip_px - pred).square()).sum()
    )
    if params.reduction == "mean":
        loss = loss / pred.shape[0]
    return loss


def set_threads(n: int) -> None:
    """Number of threads numba uses for the window loop."""
    numba.set_num_threads(max(1, min(n, int(numba.config.NUMBA_NUM_THREADS))))  # type: ignore[attr-defined]
