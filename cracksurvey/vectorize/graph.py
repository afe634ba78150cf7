"""Pixel graph of a sparse skeleton: nodes, branches, pass-through merging, spur pruning.

The skeleton pixels of a whole image (sorted, unique, row-major) become an 8-connected graph
whose redundant diagonal edges (those closing a triangle with two 4-neighbour edges) are
dropped, so a staircase is a simple path. Nodes are tips (degree 1) and junctions (degree >= 3,
touching junction pixels clustered into one node); branches are the pixel paths between nodes,
plus isolated cycles. The kernels are compiled (numba): a whole image's skeleton is walked in
linear time, without an image-sized array.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = ["BRANCH_KINDS", "BranchKind", "Branches", "PixelGraph", "prunable_pixels"]

#: Branch kinds, by the nodes at their two ends (a cycle has none); ``Branches.kind`` indexes it.
BranchKind = Literal["junction-junction", "junction-tip", "tip-tip", "cycle"]
BRANCH_KINDS: tuple[BranchKind, ...] = ("junction-junction", "junction-tip", "tip-tip", "cycle")

# Neighbour directions in the (n, 8) tables: 0 up-left, 1 up, 2 up-right, 3 left, 4 right,
# 5 down-left, 6 down, 7 down-right; direction 7 - k is the opposite of k.
_KIND_JJ, _KIND_JT, _KIND_TT, _KIND_CYCLE = 0, 1, 2, 3


def flag(flags: NDArray[np.bool_], node: NDArray[np.int64]) -> NDArray[np.bool_]:
    """``flags[node]`` with False for ``node == -1`` (no node, e.g. a cycle's ends)."""
    return np.append(flags, False)[node]


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


class PixelGraph:
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
    touched = np.nonzero(~is_cycle & (flag(glue, node_a) | flag(glue, node_b)))[0]
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


class Branches:
    """Branches of a pixel graph: paths, end nodes, kinds and pixel-step lengths."""

    def __init__(self, graph: PixelGraph, rows: NDArray[np.int64], cols: NDArray[np.int64]) -> None:
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
        ja = ~is_cycle & flag(junction, node_a)
        jb = ~is_cycle & flag(junction, node_b)
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


def prunable_pixels(branches: Branches, *, min_spur_px: float) -> NDArray[np.int64]:
    """Pixels of spurs and small loops to delete, never reducing a junction below 2 branches.

    Spurs (junction-tip branches) and loops (branches from a junction back to itself) shorter
    than ``min_spur_px`` are candidates; at each junction they are removed shortest first
    while the junction keeps at least two branch ends for spurs (so a line never loses its
    continuation) and at least one for loops.
    """
    b = branches
    is_spur = b.kind == _KIND_JT
    is_loop = (~b.is_cycle) & (b.node_a == b.node_b) & flag(b.node_is_junction, b.node_a)
    candidate = (is_spur | is_loop) & (b.chain_length_px < min_spur_px)
    idx = np.nonzero(candidate)[0]
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    junction = np.where(
        is_spur[idx] & ~flag(b.node_is_junction, b.node_a[idx]),
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
