"""Vectorization stage: sparse skeleton pixels of a whole image -> crack and branch layers.

The input is the sparse list of skeleton pixels of the whole image (the concatenated cores of
all tiles, see :class:`cracksurvey.skeleton.TileSkeleton`), so cracks that cross tile borders
come out as single features and no image-sized array is ever allocated.

Pipeline: pixel graph (8-connectivity, redundant diagonal edges of pixel triangles dropped) ->
nodes (tips: degree 1; junctions: degree >= 3, adjacent junction pixels clustered into one node)
-> branches (pixel paths between nodes, plus isolated cycles) -> spur pruning (short
junction-tip branches and short loops removed, graph rebuilt until stable) -> smoothed
polylines in map coordinates -> length, width and confidence statistics.
"""

from __future__ import annotations

import logging
from typing import Literal

import affine
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from numba import njit
from numpy.typing import ArrayLike, NDArray
from scipy import sparse
from scipy.sparse import csgraph

__all__ = ["BRANCH_COLUMNS", "BRANCH_KINDS", "CRACK_COLUMNS", "BranchKind", "vectorize_skeleton"]

logger = logging.getLogger(__name__)

#: Branch kinds, by the nodes at their two ends (a cycle has none).
BranchKind = Literal["junction-junction", "junction-tip", "tip-tip", "cycle"]
BRANCH_KINDS: tuple[BranchKind, ...] = ("junction-junction", "junction-tip", "tip-tip", "cycle")

#: Columns (and dtypes) of the branches layer, geometry excluded ('str' is pandas' string
#: dtype, object before pandas 3).
BRANCH_COLUMNS: dict[str, str] = {
    "crack_id": "int64",
    "branch_id": "int64",
    "kind": "str",
    "length_px": "float64",
    "length_m": "float64",
    "width_mean_mm": "float64",
    "width_max_mm": "float64",
    "width_p95_mm": "float64",
    "mean_confidence": "float64",
}

#: Columns (and dtypes) of the cracks layer, geometry excluded.
CRACK_COLUMNS: dict[str, str] = {
    "crack_id": "int64",
    "length_px": "float64",
    "length_m": "float64",
    "width_mean_mm": "float64",
    "width_max_mm": "float64",
    "width_p95_mm": "float64",
    "orientation_deg": "float64",
    "n_branches": "int64",
    "n_junctions": "int64",
    "mean_confidence": "float64",
    "bridged": "bool",
}

# Neighbour directions in the (n, 8) tables: 0 up-left, 1 up, 2 up-right, 3 left, 4 right,
# 5 down-left, 6 down, 7 down-right; direction 7 - k is the opposite of k.
_KIND_JJ, _KIND_JT, _KIND_TT, _KIND_CYCLE = 0, 1, 2, 3


def _flag(flags: NDArray[np.bool_], node: NDArray[np.int64]) -> NDArray[np.bool_]:
    """``flags[node]`` with False for ``node == -1`` (no node, e.g. a cycle's ends)."""
    return np.append(flags, False)[node]


# --------------------------------------------------------------------------------------------
# Pixel graph
# --------------------------------------------------------------------------------------------
@njit(cache=True)
def _build_graph(
    lin: NDArray[np.int64], stride: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], int]:  # pragma: no cover
    """Neighbour table, degree and node labels of sorted, unique linear pixel indices.

    ``lin = row * stride + col`` with a one-pixel margin so neighbours never wrap. One linear
    sweep finds the neighbours in the row above (the row below follows by symmetry); diagonal
    edges that close a triangle with two 4-neighbour edges are dropped, so a staircase is a
    simple path. Pixels of degree >= 3 that touch (8-connectivity) share one junction label;
    pixels of degree <= 1 get their own label; path pixels (degree 2) get -1.
    """
    n = lin.size
    nbr8 = np.full((n, 8), -1, dtype=np.int64)
    for i in range(1, n):
        if lin[i - 1] == lin[i] - 1:
            nbr8[i, 3] = i - 1
            nbr8[i - 1, 4] = i
    j = 0
    for i in range(n):
        above = lin[i] - stride
        while j < n and lin[j] < above - 1:
            j += 1
        for m in range(j, min(j + 3, n)):
            d = lin[m] - above
            if d > 1:
                break
            k = d + 1  # 0: up-left, 1: up, 2: up-right
            nbr8[i, k] = m
            nbr8[m, 7 - k] = i
    nbr = nbr8.copy()
    degree = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if nbr8[i, 1] >= 0 or nbr8[i, 3] >= 0:
            nbr[i, 0] = -1
        if nbr8[i, 1] >= 0 or nbr8[i, 4] >= 0:
            nbr[i, 2] = -1
        if nbr8[i, 6] >= 0 or nbr8[i, 3] >= 0:
            nbr[i, 5] = -1
        if nbr8[i, 6] >= 0 or nbr8[i, 4] >= 0:
            nbr[i, 7] = -1
        for k in range(8):
            if nbr[i, k] >= 0:
                degree[i] += 1
    # Union-find over touching junction pixels.
    parent = np.arange(n)
    for i in range(n):
        if degree[i] < 3:
            continue
        for k in range(8):
            m = nbr8[i, k]
            if m >= 0 and degree[m] >= 3:
                a = i
                while parent[a] != a:
                    parent[a] = parent[parent[a]]
                    a = parent[a]
                b = m
                while parent[b] != b:
                    parent[b] = parent[parent[b]]
                    b = parent[b]
                if a != b:
                    parent[max(a, b)] = min(a, b)
    label = np.full(n, -1, dtype=np.int64)
    n_junction = 0
    for i in range(n):
        if degree[i] >= 3:
            a = i
            while parent[a] != a:
                a = parent[a]
            if label[a] < 0:
                label[a] = n_junction
                n_junction += 1
            label[i] = label[a]
    n_nodes = n_junction
    for i in range(n):
        if degree[i] <= 1:
            label[i] = n_nodes
            n_nodes += 1
    return nbr, degree, label, n_nodes


class _PixelGraph:
    """Pixel graph of sorted, unique skeleton pixels (see :func:`_build_graph`).

    Attributes
    ----------
    nbr : (n, 8) int64, neighbour pixel index per direction (-1: none), triangle diagonals dropped
    degree : (n,) int64, number of neighbours in ``nbr``
    node_label : (n,) int64, node id of tips / isolated pixels / junction clusters, -1 elsewhere
    n_nodes : int
    """

    def __init__(self, rows: NDArray[np.int64], cols: NDArray[np.int64]) -> None:
        row0, col0 = rows.min(), cols.min()
        stride = int(cols.max() - col0) + 3
        lin = (rows - row0 + 1) * stride + (cols - col0 + 1)  # sorted: pixels are row-major
        self.nbr, self.degree, self.node_label, self.n_nodes = _build_graph(lin, stride)
        self.n = rows.size


@njit(cache=True)
def _trace_branches(
    nbr: NDArray[np.int64], node_label: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:  # pragma: no cover - numba
    """Walk the pixel paths between nodes, then the isolated cycles.

    Returns the concatenated pixel indices of all branches, branch offsets into them, and a
    flag per branch for isolated cycles (whose path repeats its first pixel at the end).
    """
    n = nbr.shape[0]
    n_node_px = 0
    for i in range(n):
        if node_label[i] >= 0:
            n_node_px += 1
    path = np.empty(2 * n + 16 * n_node_px + 2, dtype=np.int64)
    offsets = np.empty(n + 8 * n_node_px + 2, dtype=np.int64)
    is_cycle = np.zeros(n + 8 * n_node_px + 1, dtype=np.bool_)
    visited = np.zeros(n, dtype=np.bool_)
    pos = 0
    nb = 0
    offsets[0] = 0
    for p in range(n):
        if node_label[p] < 0:
            continue
        for k in range(8):
            q = nbr[p, k]
            if q < 0:
                continue
            if node_label[q] >= 0:
                # Node pixel next to node pixel: a two-pixel branch unless in the same cluster.
                if node_label[q] == node_label[p] or q < p:
                    continue
                path[pos] = p
                path[pos + 1] = q
                pos += 2
                nb += 1
                offsets[nb] = pos
                continue
            if visited[q]:
                continue
            path[pos] = p
            pos += 1
            prev = p
            cur = q
            while True:
                path[pos] = cur
                pos += 1
                if node_label[cur] >= 0:
                    break
                visited[cur] = True
                nxt = -1
                for j in range(8):
                    m = nbr[cur, j]
                    if m >= 0 and m != prev:
                        nxt = m
                        break
                prev = cur
                cur = nxt
            nb += 1
            offsets[nb] = pos
    for s in range(n):
        if node_label[s] >= 0 or visited[s]:
            continue
        prev = -1
        cur = s
        while True:
            path[pos] = cur
            pos += 1
            visited[cur] = True
            nxt = -1
            for j in range(8):
                m = nbr[cur, j]
                if m >= 0 and m != prev:
                    nxt = m
                    break
            if nxt == s or nxt < 0:
                break
            prev = cur
            cur = nxt
        path[pos] = s
        pos += 1
        is_cycle[nb] = True
        nb += 1
        offsets[nb] = pos
    return path[:pos].copy(), offsets[: nb + 1].copy(), is_cycle[:nb].copy()


def _merge_pass_through(
    path: NDArray[np.int64],
    offsets: NDArray[np.int64],
    is_cycle: NDArray[np.bool_],
    node_a: NDArray[np.int64],
    node_b: NDArray[np.int64],
    node_degree: NDArray[np.int64],
) -> tuple[list[NDArray[np.int64]], list[bool], list[int], list[int], NDArray[np.int64]]:
    """Join the branches that meet at nodes with exactly two branch ends.

    Such nodes are pixel clusters that are not real junctions (e.g. a loop left on a cluster).
    Returns the new paths, cycle flags and end nodes of the joined chains, and the indices of
    the branches they replace.
    """
    glue = node_degree == 2
    incident: dict[int, list[tuple[int, int]]] = {}
    touched = np.nonzero(~is_cycle & (_flag(glue, node_a) | _flag(glue, node_b)))[0]
    for b in touched.tolist():
        for end, node in ((0, int(node_a[b])), (1, int(node_b[b]))):
            if glue[node]:
                incident.setdefault(node, []).append((b, end))

    def near_node(b: int, reverse: bool) -> int:
        return int(node_b[b]) if reverse else int(node_a[b])

    def far_node(b: int, reverse: bool) -> int:
        return int(node_a[b]) if reverse else int(node_b[b])

    def other_end(node: int, here: tuple[int, int]) -> tuple[int, int]:
        ends = incident[node]
        return ends[1] if ends[0] == here else ends[0]

    done: set[int] = set()
    new_paths: list[NDArray[np.int64]] = []
    new_cycle: list[bool] = []
    new_a: list[int] = []
    new_b: list[int] = []
    for b0 in touched.tolist():
        if b0 in done:
            continue
        # chain: (branch, reversed) in walking order; end 0 = path start, 1 = path end.
        chain = [(b0, False)]
        closed = False
        while glue[far_node(*chain[-1])]:
            b, rev = chain[-1]
            nxt = other_end(far_node(b, rev), (b, 0 if rev else 1))
            head_b, head_rev = chain[0]
            if nxt == (head_b, 1 if head_rev else 0):
                closed = True
                break
            chain.append((nxt[0], nxt[1] == 1))
        while not closed and glue[near_node(*chain[0])]:
            b, rev = chain[0]
            prv = other_end(near_node(b, rev), (b, 1 if rev else 0))
            chain.insert(0, (prv[0], prv[1] == 0))
        pieces: list[NDArray[np.int64]] = []
        for b, rev in chain:
            seg = path[offsets[b] : offsets[b + 1]]
            seg = seg[::-1] if rev else seg
            pieces.append(seg[1:] if pieces and seg[0] == pieces[-1][-1] else seg)
        joined = np.concatenate(pieces)
        if closed and joined[-1] != joined[0]:
            joined = np.concatenate([joined, joined[:1]])
        done.update(b for b, _ in chain)
        new_paths.append(joined)
        new_cycle.append(closed)
        new_a.append(-1 if closed else near_node(*chain[0]))
        new_b.append(-1 if closed else far_node(*chain[-1]))
    return new_paths, new_cycle, new_a, new_b, np.array(sorted(done), dtype=np.int64)


class _Branches:
    """Branches of a pixel graph: paths, end nodes, kinds and pixel-step lengths."""

    def __init__(
        self, graph: _PixelGraph, rows: NDArray[np.int64], cols: NDArray[np.int64]
    ) -> None:
        path, offsets, is_cycle = _trace_branches(graph.nbr, graph.node_label)
        n_nodes = graph.n_nodes
        starts, stops = offsets[:-1], offsets[1:]
        node_a = np.where(is_cycle, -1, graph.node_label[path[starts]] if starts.size else 0)
        node_b = np.where(is_cycle, -1, graph.node_label[path[stops - 1]] if starts.size else 0)
        degree = self._degree(node_a, node_b, is_cycle, n_nodes)
        if (degree == 2).any():
            paths, cyc, new_a, new_b, replaced = _merge_pass_through(
                path, offsets, is_cycle, node_a, node_b, degree
            )
            keep = np.ones(starts.size, dtype=bool)
            keep[replaced] = False
            kept = np.nonzero(keep)[0]
            old_paths = [path[offsets[i] : offsets[i + 1]] for i in kept.tolist()]
            all_paths = old_paths + paths
            lengths = np.array([p.size for p in all_paths], dtype=np.int64)
            path = np.concatenate(all_paths) if all_paths else np.zeros(0, np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            is_cycle = np.concatenate([is_cycle[kept], np.array(cyc, dtype=bool)])
            node_a = np.concatenate([node_a[kept], np.array(new_a, dtype=np.int64)])
            node_b = np.concatenate([node_b[kept], np.array(new_b, dtype=np.int64)])
            starts, stops = offsets[:-1], offsets[1:]
            degree = self._degree(node_a, node_b, is_cycle, n_nodes)
        self.path, self.starts, self.stops, self.is_cycle = path, starts, stops, is_cycle
        self.node_a, self.node_b = node_a, node_b
        self.node_degree = degree
        # A node is a junction when three or more branch ends meet there.
        junction = degree >= 3
        ja = ~is_cycle & _flag(junction, node_a)
        jb = ~is_cycle & _flag(junction, node_b)
        kind = np.where(ja & jb, _KIND_JJ, np.where(ja | jb, _KIND_JT, _KIND_TT))
        self.kind = np.where(is_cycle, _KIND_CYCLE, kind)
        self.node_is_junction = junction
        # Pixel-step length (1 or sqrt 2 per step), used for pruning decisions.
        step = np.hypot(np.diff(rows[path]), np.diff(cols[path])).astype(np.float64)
        csum = np.concatenate([[0.0], np.cumsum(step)])
        self.chain_length_px = csum[stops - 1] - csum[starts] if starts.size else np.zeros(0)

    @staticmethod
    def _degree(
        node_a: NDArray[np.int64], node_b: NDArray[np.int64], is_cycle: NDArray[np.bool_], n: int
    ) -> NDArray[np.int64]:
        ends = np.concatenate([node_a[~is_cycle], node_b[~is_cycle]])
        return np.bincount(ends, minlength=n)


def _prunable_pixels(
    branches: _Branches, *, min_spur_px: float
) -> NDArray[np.int64]:
    """Pixels of spurs and small loops to delete, never reducing a junction below 2 branches.

    Spurs (junction-tip branches) and loops (branches from a junction back to itself) shorter
    than ``min_spur_px`` are candidates; at each junction they are removed shortest first
    while the junction keeps at least two branch ends for spurs (so a line never loses its
    continuation) and at least one for loops.
    """
    b = branches
    is_spur = b.kind == _KIND_JT
    is_loop = (~b.is_cycle) & (b.node_a == b.node_b) & _flag(b.node_is_junction, b.node_a)
    candidate = (is_spur | is_loop) & (b.chain_length_px < min_spur_px)
    idx = np.nonzero(candidate)[0]
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    junction = np.where(
        is_spur[idx] & ~_flag(b.node_is_junction, b.node_a[idx]),
        b.node_b[idx],
        b.node_a[idx],
    )
    order = np.lexsort((b.chain_length_px[idx], junction))
    degree = b.node_degree.copy()
    remove: list[NDArray[np.int64]] = []
    for i, node in zip(idx[order].tolist(), junction[order].tolist()):
        segment = b.path[b.starts[i] : b.stops[i]]
        if is_loop[i]:
            if degree[node] - 2 >= 1:
                degree[node] -= 2
                remove.append(segment[1:-1])
        elif degree[node] - 1 >= 2:
            degree[node] -= 1
            # Keep the junction end, delete the rest (interior and tip).
            remove.append(segment[1:] if b.node_a[i] == node else segment[:-1])
    if not remove:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(remove))


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------
def _smooth_open(
    coords: NDArray[np.float64], starts: NDArray[np.int64], stops: NDArray[np.int64], half: int
) -> NDArray[np.float64]:
    """Moving average of half-width ``half`` vertices within each open chain, ends fixed.

    The window shrinks symmetrically near the ends, so the first and last vertices stay.
    """
    if half <= 0 or coords.shape[0] == 0:
        return coords
    n_v = coords.shape[0]
    lengths = stops - starts
    start_of = np.repeat(starts, lengths)
    stop_of = np.repeat(stops, lengths)
    i = np.arange(n_v)
    h = np.minimum(np.minimum(i - start_of, stop_of - 1 - i), half)
    csum = np.vstack([np.zeros((1, 2)), np.cumsum(coords, axis=0)])
    return (csum[i + h + 1] - csum[i - h]) / (2 * h + 1)[:, None]


def _smooth_closed(coords: NDArray[np.float64], half: int) -> NDArray[np.float64]:
    """Circular moving average of a closed chain whose last vertex repeats the first."""
    ring = coords[:-1]
    m = ring.shape[0]
    if half <= 0 or m < 3:
        return coords
    h = min(half, (m - 1) // 2)
    padded = np.concatenate([ring[m - h :], ring, ring[:h]])
    csum = np.vstack([np.zeros((1, 2)), np.cumsum(padded, axis=0)])
    out = (csum[2 * h + 1 :] - csum[: -2 * h - 1]) / (2 * h + 1)
    return np.vstack([out, out[:1]])


def _segment_sums(
    values: NDArray[np.float64], starts: NDArray[np.int64], stops: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Sum of per-segment ``values`` (segment j joins vertex j and j+1) within each chain."""
    csum = np.concatenate([[0.0], np.cumsum(values)])
    return csum[stops - 1] - csum[starts]


@njit(cache=True)
def _group_stats(
    values: NDArray[np.float64], groups: NDArray[np.int64], n_groups: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:  # pragma: no cover
    """NaN-aware mean, max and 95th percentile (linear interpolation) of ``values`` per group."""
    count = np.zeros(n_groups + 1, dtype=np.int64)
    for i in range(values.size):
        if not np.isnan(values[i]):
            count[groups[i] + 1] += 1
    start = np.cumsum(count)
    fill = start[:-1].copy()
    buf = np.empty(start[-1], dtype=np.float64)
    for i in range(values.size):
        if not np.isnan(values[i]):
            buf[fill[groups[i]]] = values[i]
            fill[groups[i]] += 1
    mean = np.full(n_groups, np.nan)
    vmax = np.full(n_groups, np.nan)
    p95 = np.full(n_groups, np.nan)
    for g in range(n_groups):
        k = start[g + 1] - start[g]
        if k == 0:
            continue
        seg = np.sort(buf[start[g] : start[g + 1]])
        mean[g] = seg.mean()
        vmax[g] = seg[k - 1]
        pos = 0.95 * (k - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, k - 1)
        p95[g] = seg[lo] + (seg[hi] - seg[lo]) * (pos - lo)
    return mean, vmax, p95


def _empty_layers() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    cracks = gpd.GeoDataFrame(
        {k: pd.Series([], dtype=t) for k, t in CRACK_COLUMNS.items()},
        geometry=gpd.GeoSeries([], crs=None),
        crs=None,
    )
    branches = gpd.GeoDataFrame(
        {k: pd.Series([], dtype=t) for k, t in BRANCH_COLUMNS.items()},
        geometry=gpd.GeoSeries([], crs=None),
        crs=None,
    )
    return cracks, branches


def _optional_values(values: ArrayLike | None, n: int, name: str) -> NDArray[np.float64]:
    if values is None:
        return np.full(n, np.nan)
    out = np.asarray(values, dtype=np.float64).reshape(-1)
    if out.size != n:
        raise ValueError(
            f"{name} has {out.size} values but there are {n} skeleton pixels; "
            "pass one value per (row, col) pixel."
        )
    return out


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def vectorize_skeleton(
    rows: ArrayLike,
    cols: ArrayLike,
    *,
    transform: affine.Affine,
    width_px: ArrayLike | None = None,
    distance_px: ArrayLike | None = None,
    threshold_px: float | None = None,
    pixel_size_m: float | None = None,
    min_spur_px: float = 10.0,
    min_crack_length_px: float = 10.0,
    smoothing_px: float = 3.0,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Turn the sparse skeleton pixels of a whole image into crack and branch layers.

    Parameters
    ----------
    rows, cols : ndarray of shape (n,), int
        Skeleton pixel indices in the image (duplicates are ignored, first kept).
    transform : affine.Affine
        Pixel-to-map transform of the image; the centre of pixel ``(row, col)`` is at
        ``transform @ (col + 0.5, row + 0.5)``. For an image without georeferencing pass
        ``Affine.identity()`` and read the ``*_m`` lengths as pixels.
    width_px : ndarray of shape (n,), float, pixels, optional
        Measured crack width per pixel (NaN: unknown). None: width columns are NaN.
    distance_px : ndarray of shape (n,), float, pixels, optional
        Distance-map value per pixel, for the confidence. None: confidence is NaN.
    threshold_px : float, optional
        Distance threshold that made the mask; required with ``distance_px``.
    pixel_size_m : float, optional
        Ground size of a pixel (metres) to convert widths to millimetres. None: widths in mm
        are NaN (length_m still follows ``transform``).
    min_spur_px : float
        Junction-tip branches (and loops from a junction back to itself) with a chain length
        below this (pixels) are pruned, shortest first, as long as their junction keeps two
        branches. The graph is then rebuilt, so junctions left with two branches disappear and
        their branches merge; this repeats until nothing is pruned.
    min_crack_length_px : float
        Cracks (8-connected components) shorter than this (pixels, smoothed length) are
        dropped. Components of a single pixel are always dropped (they have no line).
    smoothing_px : float
        Half-width, in skeleton pixels along the chain, of the moving average applied to the
        pixel-centre coordinates of each branch before measuring length; branch ends stay
        fixed. It removes the staircase of 8-connected chains, which otherwise overestimates
        length by up to 8 % at oblique angles. 0 switches smoothing off (exact pixel-step
        lengths: 1 or sqrt 2 per step).

    Returns
    -------
    cracks : geopandas.GeoDataFrame
        One MultiLineString per crack (connected skeleton component), columns
        :data:`CRACK_COLUMNS`: ``crack_id`` (1..N, row-major order of the first pixel),
        ``length_px``, ``length_m`` (geometric length of the smoothed polylines, pixels and
        map units), ``width_mean_mm``, ``width_max_mm``, ``width_p95_mm`` (over the crack's
        pixels, NaN-aware), ``orientation_deg`` (length-weighted mean axial direction of the
        segments in map coordinates, [0, 180), 0 = +x (east), counter-clockwise),
        ``n_branches``, ``n_junctions`` (nodes where >= 3 branch ends meet),
        ``mean_confidence`` (mean over the pixels of ``clip(1 - distance_px / threshold_px,
        0, 1)``: 1 on the predicted centreline, 0 at the threshold), ``bridged`` (always
        False: no gap bridging yet). No CRS: the caller sets it.
    branches : geopandas.GeoDataFrame
        One LineString per branch, columns :data:`BRANCH_COLUMNS`; ``kind`` is one of
        'junction-junction', 'junction-tip', 'tip-tip', 'cycle'. Junction ends sit at the
        centroid of the junction's pixels, so branches of a crack touch.
    """
    rows_a = np.asarray(rows, dtype=np.int64).reshape(-1)
    cols_a = np.asarray(cols, dtype=np.int64).reshape(-1)
    if rows_a.size != cols_a.size:
        raise ValueError(
            f"rows has {rows_a.size} values but cols has {cols_a.size}; they must pair up."
        )
    n_in = rows_a.size
    width = _optional_values(width_px, n_in, "width_px")
    distance = _optional_values(distance_px, n_in, "distance_px")
    if distance_px is not None and threshold_px is None:
        raise ValueError(
            "distance_px was given without threshold_px; pass the threshold that made the mask "
            "so the confidence can be computed."
        )
    if n_in == 0:
        return _empty_layers()

    # Unique pixels in row-major order (sorted linear index).
    row0, col0 = rows_a.min(), cols_a.min()
    lin = (rows_a - row0) * (int(cols_a.max() - col0) + 1) + (cols_a - col0)
    _, first = np.unique(lin, return_index=True)
    if first.size != n_in:
        logger.debug("vectorize: %d duplicate skeleton pixels ignored", n_in - first.size)
    r, c, width, distance = rows_a[first], cols_a[first], width[first], distance[first]

    # Build the graph and prune spurs until stable (a pass only prunes what the previous one
    # exposed, so real skeletons settle in two or three passes).
    max_passes = 8
    for iteration in range(max_passes):
        graph = _PixelGraph(r, c)
        branches = _Branches(graph, r, c)
        drop = _prunable_pixels(branches, min_spur_px=min_spur_px)
        if drop.size == 0:
            break
        logger.debug("vectorize: pass %d pruned %d spur pixels", iteration + 1, drop.size)
        keep = np.ones(r.size, dtype=bool)
        keep[drop] = False
        r, c, width, distance = r[keep], c[keep], width[keep], distance[keep]
    else:
        logger.debug("vectorize: spur pruning stopped after %d passes", max_passes)
        graph = _PixelGraph(r, c)
        branches = _Branches(graph, r, c)

    n_branch = branches.starts.size
    if n_branch == 0:
        logger.debug("vectorize: %d isolated pixels, no lines", r.size)
        return _empty_layers()

    # Connected components (cracks) of the pruned pixel graph.
    src = np.repeat(np.arange(graph.n), 8)
    dst = graph.nbr.ravel()
    ok = dst >= 0
    adjacency = sparse.coo_matrix(
        (np.ones(int(ok.sum()), dtype=np.int8), (src[ok], dst[ok])), shape=(graph.n, graph.n)
    )
    _, component = csgraph.connected_components(adjacency, directed=False)

    path, starts, stops = branches.path, branches.starts, branches.stops
    n_vertex = stops - starts

    # Vertex coordinates (pixel-centre row, col); junction ends move to the cluster centroid.
    coords = np.column_stack([r[path], c[path]]).astype(np.float64)
    labels = graph.node_label
    junction_px = np.nonzero((labels >= 0) & _flag(branches.node_is_junction, labels))[0]
    n_nodes = branches.node_is_junction.size
    count = np.bincount(labels[junction_px], minlength=n_nodes).astype(np.float64)
    centroid_r = np.bincount(labels[junction_px], weights=r[junction_px], minlength=n_nodes)
    centroid_c = np.bincount(labels[junction_px], weights=c[junction_px], minlength=n_nodes)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = np.column_stack([centroid_r / count, centroid_c / count])
    for end, node in ((starts, branches.node_a), (stops - 1, branches.node_b)):
        at_junction = (~branches.is_cycle) & _flag(branches.node_is_junction, node)
        coords[end[at_junction]] = centroid[node[at_junction]]

    half = int(round(smoothing_px))  # whole vertices
    open_b = ~branches.is_cycle
    smoothed = coords.copy()
    if half > 0:
        sel = np.repeat(open_b, n_vertex)
        o_starts = np.concatenate([[0], np.cumsum(n_vertex[open_b])[:-1]]).astype(np.int64)
        o_stops = o_starts + n_vertex[open_b]
        smoothed[sel] = _smooth_open(coords[sel], o_starts, o_stops, half)
        for i in np.nonzero(branches.is_cycle)[0]:
            smoothed[starts[i] : stops[i]] = _smooth_closed(coords[starts[i] : stops[i]], half)

    # Map coordinates of pixel centres.
    t = transform
    col_c = smoothed[:, 1] + 0.5
    row_c = smoothed[:, 0] + 0.5
    x = t.a * col_c + t.b * row_c + t.c
    y = t.d * col_c + t.e * row_c + t.f

    # Per-segment quantities (segment j joins vertex j, j+1; the last of each branch is junk).
    seg_px = np.hypot(np.diff(smoothed[:, 0]), np.diff(smoothed[:, 1]))
    dx, dy = np.diff(x), np.diff(y)
    seg_m = np.hypot(dx, dy)
    branch_length_px = _segment_sums(seg_px, starts, stops)
    branch_length_m = _segment_sums(seg_m, starts, stops)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos2 = np.where(seg_m > 0, (dx * dx - dy * dy) / seg_m, 0.0)
        sin2 = np.where(seg_m > 0, 2.0 * dx * dy / seg_m, 0.0)
    branch_cos2 = _segment_sums(cos2, starts, stops)
    branch_sin2 = _segment_sums(sin2, starts, stops)

    # Cracks: components with at least one branch, long enough.
    branch_comp = component[path[starts]]
    n_comp = int(component.max()) + 1
    comp_length_px = np.bincount(branch_comp, weights=branch_length_px, minlength=n_comp)
    has_branch = np.bincount(branch_comp, minlength=n_comp) > 0
    keep_comp = has_branch & (comp_length_px >= min_crack_length_px)
    n_short = int((has_branch & ~keep_comp).sum())
    if n_short:
        logger.debug("vectorize: dropped %d cracks under %g px", n_short, min_crack_length_px)
    # crack_id 1..N in row-major order of each component's first pixel (pixels are sorted).
    _, first_px = np.unique(component, return_index=True)
    kept = np.nonzero(keep_comp)[0]
    kept = kept[np.argsort(first_px[kept], kind="stable")]
    crack_of_comp = np.full(n_comp, -1, dtype=np.int64)
    crack_of_comp[kept] = np.arange(kept.size)
    n_crack = kept.size
    if n_crack == 0:
        return _empty_layers()

    branch_crack = crack_of_comp[branch_comp]
    b_keep = np.nonzero(branch_crack >= 0)[0]
    b_keep = b_keep[np.lexsort((b_keep, branch_crack[b_keep]))]

    # Per-pixel values.
    if pixel_size_m is not None:
        width_mm = width * (float(pixel_size_m) * 1000.0)
    else:
        width_mm = np.full_like(width, np.nan)
    if threshold_px is not None:
        confidence = np.clip(1.0 - distance / float(threshold_px), 0.0, 1.0)
    else:
        confidence = np.full_like(distance, np.nan)

    # Branch stats over the branch's pixels (cycles: closing pixel counted once).
    branch_of_vertex = np.repeat(np.arange(n_branch), n_vertex)
    vertex_ok = np.ones(path.size, dtype=bool)
    vertex_ok[(stops - 1)[branches.is_cycle]] = False
    vb = branch_of_vertex[vertex_ok]
    vp = path[vertex_ok]
    b_wmean, b_wmax, b_wp95 = _group_stats(width_mm[vp], vb, n_branch)
    b_conf, _, _ = _group_stats(confidence[vp], vb, n_branch)

    # Crack stats over the crack's pixels.
    pix_crack = crack_of_comp[component]
    in_crack = pix_crack >= 0
    c_wmean, c_wmax, c_wp95 = _group_stats(width_mm[in_crack], pix_crack[in_crack], n_crack)
    c_conf, _, _ = _group_stats(confidence[in_crack], pix_crack[in_crack], n_crack)
    bc = branch_crack[b_keep]
    c_len_px = np.bincount(bc, weights=branch_length_px[b_keep], minlength=n_crack)
    c_len_m = np.bincount(bc, weights=branch_length_m[b_keep], minlength=n_crack)
    c_cos2 = np.bincount(bc, weights=branch_cos2[b_keep], minlength=n_crack)
    c_sin2 = np.bincount(bc, weights=branch_sin2[b_keep], minlength=n_crack)
    orientation = np.mod(np.degrees(0.5 * np.arctan2(c_sin2, c_cos2)), 180.0)
    orientation[np.isclose(orientation, 180.0)] = 0.0
    n_branches = np.bincount(bc, minlength=n_crack)
    junction_nodes = np.nonzero(branches.node_is_junction)[0]
    if junction_nodes.size:
        # Component of each junction node: that of any of its pixels.
        node_comp = np.full(n_nodes, -1, dtype=np.int64)
        node_comp[labels[junction_px]] = component[junction_px]
        j_crack = crack_of_comp[node_comp[junction_nodes]]
        n_junctions = np.bincount(j_crack[j_crack >= 0], minlength=n_crack)
    else:
        n_junctions = np.zeros(n_crack, dtype=np.int64)

    # Geometry: vertices of the kept branches, in b_keep order.
    kept_nv = n_vertex[b_keep]
    line_first = np.concatenate([[0], np.cumsum(kept_nv)[:-1]])
    order_v = np.repeat(starts[b_keep] - line_first, kept_nv) + np.arange(int(kept_nv.sum()))
    line_index = np.repeat(np.arange(b_keep.size), n_vertex[b_keep])
    lines = shapely.linestrings(np.column_stack([x[order_v], y[order_v]]), indices=line_index)
    multis = shapely.multilinestrings(lines, indices=bc)

    kind_names = np.array(BRANCH_KINDS, dtype=object)
    branches_gdf = gpd.GeoDataFrame(
        {
            "crack_id": (bc + 1).astype(np.int64),
            "branch_id": np.arange(1, b_keep.size + 1, dtype=np.int64),
            "kind": pd.Series(kind_names[branches.kind[b_keep]], dtype="str"),
            "length_px": branch_length_px[b_keep],
            "length_m": branch_length_m[b_keep],
            "width_mean_mm": b_wmean[b_keep],
            "width_max_mm": b_wmax[b_keep],
            "width_p95_mm": b_wp95[b_keep],
            "mean_confidence": b_conf[b_keep],
        },
        geometry=gpd.GeoSeries(lines, crs=None),
        crs=None,
    )
    cracks_gdf = gpd.GeoDataFrame(
        {
            "crack_id": np.arange(1, n_crack + 1, dtype=np.int64),
            "length_px": c_len_px,
            "length_m": c_len_m,
            "width_mean_mm": c_wmean,
            "width_max_mm": c_wmax,
            "width_p95_mm": c_wp95,
            "orientation_deg": orientation,
            "n_branches": n_branches.astype(np.int64),
            "n_junctions": np.asarray(n_junctions, dtype=np.int64),
            "mean_confidence": c_conf,
            "bridged": np.zeros(n_crack, dtype=bool),
        },
        geometry=gpd.GeoSeries(multis, crs=None),
        crs=None,
    )
    logger.debug("vectorize: %d cracks, %d branches", n_crack, b_keep.size)
    return cracks_gdf, branches_gdf
