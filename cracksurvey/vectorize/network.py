"""Skeleton pixels to a crack network: pruned branches, smoothed polylines (pixel space), cracks.

Steps of :func:`trace_cracks`:

1. unique pixels in row-major order;
2. pixel graph and branches (:mod:`cracksurvey.vectorize.graph`), spur pruning until stable;
3. cracks: the connected components of the pruned graph, long enough; a crack holding pixels of
   a gap bridge (:mod:`cracksurvey.gaps`, added to the skeleton before it gets here) is
   flagged ``bridged``;
4. polylines: junction ends moved to the centroid of their junction's pixels, then a moving
   average along each branch (ends fixed) that removes the staircase of 8-connected chains.

Everything here is in pixel units (rows, cols); map coordinates and measurements are the
measure stage's (:mod:`cracksurvey.measure.cracks`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.sparse import csgraph

from cracksurvey.vectorize.graph import BRANCH_KINDS, Branches, PixelGraph, flag, prunable_pixels

__all__ = ["CrackNetwork", "trace_cracks"]

logger = logging.getLogger(__name__)

#: Spur pruning passes at most (a pass only prunes what the previous one exposed, so real
#: skeletons settle in two or three).
MAX_PRUNING_PASSES = 8


@dataclass(frozen=True, eq=False)
class CrackNetwork:
    """The cracks of one image as branches of pixel polylines (output of :func:`trace_cracks`).

    Attributes
    ----------
    rows, cols : ndarray of shape (n,), int64
        Skeleton pixels left after pruning, unique, row-major.
    width_px, distance_px : ndarray of shape (n,), float64, pixels
        Per-pixel width and distance-map value (NaN: unknown), aligned with ``rows``.
    pixel_crack : ndarray of shape (n,), int64
        Crack index of each pixel; -1 for pixels of dropped (short) components.
    path : ndarray of shape (m,), int64
        Pixel index of every branch vertex, branch after branch (a cycle repeats its first
        pixel at the end).
    starts, stops : ndarray of shape (n_branch,), int64
        Each branch's vertices are ``path[starts[b]:stops[b]]``.
    vertices : ndarray of shape (m, 2), float64
        Smoothed (row, col) of every vertex, pixel-centre coordinates minus 0.5 (pixel
        indices); junction ends sit at their junction's centroid.
    is_cycle : ndarray of shape (n_branch,), bool
    kind : ndarray of shape (n_branch,), int64
        Index into :data:`~cracksurvey.vectorize.graph.BRANCH_KINDS`.
    branch_length_px : ndarray of shape (n_branch,), float64
        Length of the smoothed polyline, pixels.
    branch_crack : ndarray of shape (n_branch,), int64
        Crack index of each branch (-1: dropped).
    crack_branches : ndarray of shape (k,), int64
        The kept branches, by crack then by branch index (the order of the output layers).
    n_junctions : ndarray of shape (n_crack,), int64
        Nodes where three or more branch ends meet, per crack.
    bridged : ndarray of shape (n_crack,), bool
        The crack holds pixels of a gap bridge (:mod:`cracksurvey.gaps`).
    """

    rows: NDArray[np.int64]
    cols: NDArray[np.int64]
    width_px: NDArray[np.float64]
    distance_px: NDArray[np.float64]
    pixel_crack: NDArray[np.int64]
    path: NDArray[np.int64]
    starts: NDArray[np.int64]
    stops: NDArray[np.int64]
    vertices: NDArray[np.float64]
    is_cycle: NDArray[np.bool_]
    kind: NDArray[np.int64]
    branch_length_px: NDArray[np.float64]
    branch_crack: NDArray[np.int64]
    crack_branches: NDArray[np.int64]
    n_junctions: NDArray[np.int64]
    bridged: NDArray[np.bool_]

    @property
    def n_crack(self) -> int:
        return int(self.bridged.size)

    @property
    def kind_names(self) -> NDArray[np.object_]:
        """Kind of each branch as a name of :data:`~cracksurvey.vectorize.graph.BRANCH_KINDS`."""
        return np.array(BRANCH_KINDS, dtype=object)[self.kind]

    @classmethod
    def empty(cls) -> CrackNetwork:
        """A network without cracks."""
        i, f = np.zeros(0, np.int64), np.zeros(0, np.float64)
        return cls(
            i,
            i,
            f,
            f,
            i,
            i,
            i,
            i,
            np.zeros((0, 2)),
            np.zeros(0, bool),
            i,
            f,
            i,
            i,
            i,
            np.zeros(0, bool),
        )


def trace_cracks(
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    width_px: NDArray[np.float64],
    distance_px: NDArray[np.float64],
    *,
    min_spur_px: float,
    min_crack_length_px: float,
    smoothing_px: float,
    bridged_px: NDArray[np.bool_] | None = None,
) -> CrackNetwork:
    """The crack network of a sparse skeleton (module docstring; parameters as in
    :func:`cracksurvey.vectorize.vectorize_skeleton`)."""
    n_in = rows.size
    if n_in == 0:
        return CrackNetwork.empty()
    # Unique pixels in row-major order (sorted linear index).
    row0, col0 = rows.min(), cols.min()
    lin = (rows - row0) * (int(cols.max() - col0) + 1) + (cols - col0)
    _, first = np.unique(lin, return_index=True)
    if first.size != n_in:
        logger.debug("vectorize: %d duplicate skeleton pixels ignored", n_in - first.size)
    r, c, width, distance = rows[first], cols[first], width_px[first], distance_px[first]
    bridge = np.zeros(r.size, bool) if bridged_px is None else np.asarray(bridged_px, bool)[first]

    graph, branches, keep = _pruned(r, c, min_spur_px=min_spur_px)
    r, c, width, distance, bridge = r[keep], c[keep], width[keep], distance[keep], bridge[keep]
    if branches.starts.size == 0:
        logger.debug("vectorize: %d isolated pixels, no lines", r.size)
        return CrackNetwork.empty()

    component = _components(graph)
    vertices = _polylines(graph, branches, r, c, smoothing_px=smoothing_px)
    starts, stops = branches.starts, branches.stops
    seg_px = np.hypot(np.diff(vertices[:, 0]), np.diff(vertices[:, 1]))
    csum = np.concatenate([[0.0], np.cumsum(seg_px)])
    branch_length_px = csum[stops - 1] - csum[starts]

    # Cracks: components with at least one branch, long enough.
    branch_comp = component[branches.path[starts]]
    n_comp = int(component.max()) + 1
    comp_length_px = np.bincount(branch_comp, weights=branch_length_px, minlength=n_comp)
    has_branch = np.bincount(branch_comp, minlength=n_comp) > 0
    keep_comp = has_branch & (comp_length_px >= min_crack_length_px)
    n_short = int((has_branch & ~keep_comp).sum())
    if n_short:
        logger.debug("vectorize: dropped %d cracks under %g px", n_short, min_crack_length_px)
    # crack index 0..N-1 in row-major order of each component's first pixel (pixels are sorted).
    _, first_px = np.unique(component, return_index=True)
    kept = np.nonzero(keep_comp)[0]
    kept = kept[np.argsort(first_px[kept], kind="stable")]
    crack_of_comp = np.full(n_comp, -1, dtype=np.int64)
    crack_of_comp[kept] = np.arange(kept.size)
    if kept.size == 0:
        return CrackNetwork.empty()
    branch_crack = crack_of_comp[branch_comp]
    crack_branches = np.nonzero(branch_crack >= 0)[0]
    crack_branches = crack_branches[np.lexsort((crack_branches, branch_crack[crack_branches]))]
    pixel_crack = crack_of_comp[component]
    on_crack = bridge & (pixel_crack >= 0)
    bridged = np.bincount(pixel_crack[on_crack], minlength=kept.size) > 0
    return CrackNetwork(
        rows=r,
        cols=c,
        width_px=width,
        distance_px=distance,
        pixel_crack=pixel_crack,
        path=branches.path,
        starts=starts,
        stops=stops,
        vertices=vertices,
        is_cycle=branches.is_cycle,
        kind=branches.kind.astype(np.int64),
        branch_length_px=branch_length_px,
        branch_crack=branch_crack,
        crack_branches=crack_branches,
        n_junctions=_junctions_per_crack(graph, branches, component, crack_of_comp, kept.size),
        bridged=bridged,
    )


def _pruned(
    rows: NDArray[np.int64], cols: NDArray[np.int64], *, min_spur_px: float
) -> tuple[PixelGraph, Branches, NDArray[np.bool_]]:
    """Graph and branches with spurs pruned until stable, and which input pixels are kept."""
    kept = np.arange(rows.size)
    r, c = rows, cols
    for iteration in range(MAX_PRUNING_PASSES):
        graph = PixelGraph(r, c)
        branches = Branches(graph, r, c)
        drop = prunable_pixels(branches, min_spur_px=min_spur_px)
        if drop.size == 0:
            break
        logger.debug("vectorize: pass %d pruned %d spur pixels", iteration + 1, drop.size)
        keep = np.ones(r.size, dtype=bool)
        keep[drop] = False
        r, c, kept = r[keep], c[keep], kept[keep]
    else:
        logger.debug("vectorize: spur pruning stopped after %d passes", MAX_PRUNING_PASSES)
        graph = PixelGraph(r, c)
        branches = Branches(graph, r, c)
    mask = np.zeros(rows.size, dtype=bool)
    mask[kept] = True
    return graph, branches, mask


def _components(graph: PixelGraph) -> NDArray[np.int64]:
    """Connected component of each pixel of the pruned graph."""
    src = np.repeat(np.arange(graph.n), 8)
    dst = graph.nbr.ravel()
    ok = dst >= 0
    adjacency = sparse.coo_matrix(
        (np.ones(int(ok.sum()), dtype=np.int8), (src[ok], dst[ok])), shape=(graph.n, graph.n)
    )
    _, component = csgraph.connected_components(adjacency, directed=False)
    return np.asarray(component, dtype=np.int64)


def _polylines(
    graph: PixelGraph,
    branches: Branches,
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    *,
    smoothing_px: float,
) -> NDArray[np.float64]:
    """Smoothed (row, col) of every branch vertex; junction ends at their cluster's centroid."""
    path, starts, stops = branches.path, branches.starts, branches.stops
    n_vertex = stops - starts
    coords = np.column_stack([rows[path], cols[path]]).astype(np.float64)
    labels = graph.node_label
    junction_px = _junction_pixels(graph, branches)
    n_nodes = branches.node_is_junction.size
    count = np.bincount(labels[junction_px], minlength=n_nodes).astype(np.float64)
    centroid_r = np.bincount(labels[junction_px], weights=rows[junction_px], minlength=n_nodes)
    centroid_c = np.bincount(labels[junction_px], weights=cols[junction_px], minlength=n_nodes)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = np.column_stack([centroid_r / count, centroid_c / count])
    for end, node in ((starts, branches.node_a), (stops - 1, branches.node_b)):
        at_junction = (~branches.is_cycle) & flag(branches.node_is_junction, node)
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
    return smoothed


def _junction_pixels(graph: PixelGraph, branches: Branches) -> NDArray[np.intp]:
    """Pixels that belong to a junction node (three or more branch ends)."""
    labels = graph.node_label
    return np.nonzero((labels >= 0) & flag(branches.node_is_junction, labels))[0]


def _junctions_per_crack(
    graph: PixelGraph,
    branches: Branches,
    component: NDArray[np.int64],
    crack_of_comp: NDArray[np.int64],
    n_crack: int,
) -> NDArray[np.int64]:
    """Number of junction nodes in each crack."""
    junction_nodes = np.nonzero(branches.node_is_junction)[0]
    if junction_nodes.size == 0:
        return np.zeros(n_crack, dtype=np.int64)
    labels = graph.node_label
    junction_px = _junction_pixels(graph, branches)
    # Component of each junction node: that of any of its pixels.
    node_comp = np.full(branches.node_is_junction.size, -1, dtype=np.int64)
    node_comp[labels[junction_px]] = component[junction_px]
    j_crack = crack_of_comp[node_comp[junction_nodes]]
    return np.bincount(j_crack[j_crack >= 0], minlength=n_crack).astype(np.int64)


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
