"""Gap bridging: crack tips linked to the next crack through a valley of the distance map.

A crack the network sees only faintly leaves a chain of skeleton fragments: where the predicted
distance dips just above the threshold between two fragments, there is a *valley* — the network
saw something there, not enough to cross the threshold. From each tip of a fragment, the minimal
path to a pixel of *another* fragment is searched with the predicted distance as cost (a geodesic
through the valley), within ``max_gap_px`` of the tip. The path is kept when

- its gap part (off the skeleton) is at most ``max_gap_px`` long (geometric length, pixels), and
- the predicted distance along it never exceeds ``max_valley_px`` (it stays in the valley).

Its pixels become skeleton pixels, flagged as bridged. A fragment is never linked to itself (no
cycles are made) and each pair of fragments is linked at most once (tips are taken in row-major
order, so the result does not depend on how the image is cut).

Two entry points share one search: :func:`bridge_gaps` on a whole in-memory image (evaluation),
and :func:`bridge_sparse_skeleton` on an image's sparse skeleton with windowed reads of its
distance raster (the measure stage of ``process``: memory per window, never per image).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage, sparse
from scipy.sparse import csgraph

__all__ = ["bridge_gaps", "bridge_sparse_skeleton", "skeleton_tips"]

_EIGHT = np.ones((3, 3), bool)
_FLOOR = 0.05  # cost of a step on the skeleton, and added to the distance off it


def skeleton_tips(skeleton: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Rows and columns of skeleton pixels with exactly one 8-neighbour (ends of lines)."""
    sk = np.asarray(skeleton, bool)
    kernel = _EIGHT.astype(np.uint8)
    neighbours = ndimage.convolve(sk.astype(np.uint8), kernel, mode="constant") - sk
    rows, cols = np.nonzero(sk & (neighbours == 1))
    return rows, cols


def _search(
    distance: NDArray[np.float64],
    labels: NDArray[np.int64],
    tip: tuple[int, int],
    *,
    max_gap_px: float,
    max_valley_px: float,
) -> tuple[int, NDArray[np.int64]] | None:
    """The component a tip links to and the gap pixels of the link, or None.

    ``distance`` and ``labels`` are windows around the tip (label 0: not skeleton).
    """
    from skimage.graph import MCP_Geometric

    own = labels[tip]
    others = (labels > 0) & (labels != own)
    if not others.any():
        return None
    with np.errstate(invalid="ignore"):
        cost = np.where(distance <= max_valley_px, distance + _FLOOR, np.inf)
    cost[labels > 0] = _FLOOR
    mcp = MCP_Geometric(cost, fully_connected=True)
    cumulative, _ = mcp.find_costs([tip])
    reached = np.where(others, cumulative, np.inf)
    best = np.unravel_index(int(np.argmin(reached)), reached.shape)
    if not np.isfinite(reached[best]):
        return None
    path = np.asarray(mcp.traceback(best))
    off = labels[path[:, 0], path[:, 1]] == 0
    if not off.any():
        return None
    steps = np.hypot(*np.diff(path, axis=0).T)
    gap_length = float(steps[off[1:] | off[:-1]].sum())
    gap = path[off]
    if gap_length > max_gap_px or distance[gap[:, 0], gap[:, 1]].max() > max_valley_px:
        return None
    return int(labels[best]), gap


def bridge_gaps(
    distance: NDArray[np.floating],
    skeleton: NDArray[np.bool_],
    *,
    max_gap_px: float,
    max_valley_px: float,
) -> tuple[NDArray[np.bool_], int]:
    """Bridge pixels of a whole image (not on the skeleton), and the number of bridges.

    Parameters
    ----------
    distance : ndarray of shape (H, W), float, pixels
        Predicted distance to the crack centreline (low in valleys).
    skeleton : ndarray of shape (H, W), bool
        The thresholded, skeletonized crack mask.
    max_gap_px : float
        Longest bridge, pixels (0: no bridging).
    max_valley_px : float
        Highest predicted distance a bridge may cross, pixels.
    """
    sk = np.asarray(skeleton, bool)
    out = np.zeros(sk.shape, bool)
    if max_gap_px <= 0 or not sk.any():
        return out, 0
    labels, n = ndimage.label(sk, structure=_EIGHT)
    if n < 2:
        return out, 0
    d = np.asarray(distance, np.float64)
    reach = int(np.ceil(max_gap_px))
    h, w = sk.shape
    linked: set[tuple[int, int]] = set()
    for r, c in zip(*skeleton_tips(sk), strict=True):
        r0, c0 = max(0, r - reach), max(0, c - reach)
        window = (slice(r0, min(h, r + reach + 1)), slice(c0, min(w, c + reach + 1)))
        found = _search(
            d[window],
            labels[window].astype(np.int64),
            (r - r0, c - c0),
            max_gap_px=max_gap_px,
            max_valley_px=max_valley_px,
        )
        if found is None:
            continue
        pair = (min(labels[r, c], found[0]), max(labels[r, c], found[0]))
        if pair in linked:
            continue
        linked.add(pair)
        out[found[1][:, 0] + r0, found[1][:, 1] + c0] = True
    return out & ~sk, len(linked)


def _sparse_components(
    rows: NDArray[np.int64], cols: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """8-connected component (1..n) and tip flag of each sparse skeleton pixel (the tips of the
    vectorize stage's pixel graph)."""
    from cracksurvey.vectorize.graph import PixelGraph

    order = np.lexsort((cols, rows))
    graph = PixelGraph(rows[order], cols[order])
    src = np.repeat(np.arange(graph.n), 8)
    dst = graph.nbr.ravel()
    ok = dst >= 0
    adjacency = sparse.coo_matrix(
        (np.ones(int(ok.sum()), np.int8), (src[ok], dst[ok])), shape=(graph.n, graph.n)
    )
    _, component = csgraph.connected_components(adjacency, directed=False)
    out_component = np.empty(rows.size, np.int64)
    out_tip = np.empty(rows.size, bool)
    out_component[order] = component + 1
    out_tip[order] = graph.degree == 1
    return out_component, out_tip


def bridge_sparse_skeleton(
    rows: NDArray[np.integer],
    cols: NDArray[np.integer],
    read_distance: Callable[[int, int, int, int], NDArray[np.floating]],
    *,
    height: int,
    width: int,
    max_gap_px: float,
    max_valley_px: float,
    block_px: int = 1024,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32], int]:
    """Bridges of an image given by its sparse skeleton, reading the distance map by windows.

    Parameters
    ----------
    rows, cols : ndarray of shape (n,), int
        Skeleton pixels (image indices, unique).
    read_distance : callable
        ``read_distance(row0, row1, col0, col1)`` returns that window of the distance map
        (float, NaN where there is no data).
    height, width : int
        Image size, pixels.
    block_px : int
        Tips are handled in blocks of this side (each reads one window ``block_px + 2 *
        max_gap_px`` on a side).

    Returns
    -------
    bridge_rows, bridge_cols : ndarray of shape (k,), int64
        The bridge pixels.
    bridge_distance : ndarray of shape (k,), float32
        The predicted distance at them.
    n_bridges : int
    """
    r_all = np.asarray(rows, np.int64)
    c_all = np.asarray(cols, np.int64)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), 0)
    if max_gap_px <= 0 or r_all.size == 0:
        return empty
    component, tip = _sparse_components(r_all, c_all)
    if component.max() < 2:
        return empty
    reach = int(np.ceil(max_gap_px))
    tips = np.flatnonzero(tip)
    tips = tips[np.lexsort((c_all[tips], r_all[tips]))]  # row-major
    block_of_tip = (r_all[tips] // block_px) * (width // block_px + 1) + c_all[tips] // block_px
    linked: set[tuple[int, int]] = set()
    out_r: list[NDArray[np.int64]] = []
    out_c: list[NDArray[np.int64]] = []
    out_d: list[NDArray[np.float32]] = []
    for block in np.unique(block_of_tip):
        mine = tips[block_of_tip == block]
        r0 = max(0, int(r_all[mine].min()) - reach)
        r1 = min(height, int(r_all[mine].max()) + reach + 1)
        c0 = max(0, int(c_all[mine].min()) - reach)
        c1 = min(width, int(c_all[mine].max()) + reach + 1)
        distance = np.asarray(read_distance(r0, r1, c0, c1), np.float64)
        distance = np.where(np.isfinite(distance), distance, np.inf)
        inside = (r_all >= r0) & (r_all < r1) & (c_all >= c0) & (c_all < c1)
        labels = np.zeros((r1 - r0, c1 - c0), np.int64)
        labels[r_all[inside] - r0, c_all[inside] - c0] = component[inside]
        for t in mine:
            tr, tc = int(r_all[t]), int(c_all[t])
            w0, w1 = max(r0, tr - reach), min(r1, tr + reach + 1)
            v0, v1 = max(c0, tc - reach), min(c1, tc + reach + 1)
            found = _search(
                distance[w0 - r0 : w1 - r0, v0 - c0 : v1 - c0],
                labels[w0 - r0 : w1 - r0, v0 - c0 : v1 - c0],
                (tr - w0, tc - v0),
                max_gap_px=max_gap_px,
                max_valley_px=max_valley_px,
            )
            if found is None:
                continue
            pair = (min(int(component[t]), found[0]), max(int(component[t]), found[0]))
            if pair in linked:
                continue
            linked.add(pair)
            gap = found[1]
            out_r.append(gap[:, 0] + w0)
            out_c.append(gap[:, 1] + v0)
            out_d.append(distance[gap[:, 0] + w0 - r0, gap[:, 1] + v0 - c0].astype(np.float32))
    if not out_r:
        return empty
    br, bc, bd = np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_d)
    lin = br * (width + 1) + bc
    _, first = np.unique(lin, return_index=True)  # two bridges may share pixels
    return br[first], bc[first], bd[first], len(linked)
