"""Tests for cracksurvey.vectorize: pixel graph, branches, pruning, geometry, lengths, layers.

Length accuracy (Hypothesis): random straight or circular-arc centrelines (radius >= 50 px,
at most half a turn), random angle, length 50-500 px, rasterised two ways:
- as a 1-px 8-connected line (rounded dense samples, corner pixels removed), then skeletonized;
- as a thresholded synthetic distance map (distance to the centreline <= 1-3 px), skeletonized.
The reference is the centreline length between the points of the (extended) centreline nearest
to the two ends of the output polyline: thinning may end a skeleton a pixel or two before or
after the drawn end, which is a property of the skeleton, not of the length measurement.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from cracksurvey.skeleton import TileSkeleton, extract_tile_skeleton, skeletonize_mask
from cracksurvey.vectorize import BRANCH_COLUMNS, CRACK_COLUMNS, vectorize_skeleton

IDENTITY = Affine.identity()
SQRT2 = math.sqrt(2.0)
EXACT = dict(smoothing_px=0, min_spur_px=0, min_crack_length_px=0)


def _vec(pixels, **kwargs):
    pixels = np.asarray(pixels, dtype=np.int64).reshape(-1, 2)
    kwargs.setdefault("transform", IDENTITY)
    return vectorize_skeleton(pixels[:, 0], pixels[:, 1], **kwargs)


def _hline(row, c0, c1):
    return [(row, c) for c in range(c0, c1 + 1)]


def _vline(col, r0, r1):
    return [(r, col) for r in range(r0, r1 + 1)]


# --- centrelines for the geometric tests ----------------------------------------------------
def _centreline(length_px, radius_px, theta, start=-0.0, step=0.125):
    """(row, col) samples of a straight (radius inf) or circular centreline from arc length
    ``start`` to ``start + length_px``, leaving the origin (at arc length 0) in direction
    ``theta`` (row component sin, col component cos)."""
    s = np.arange(start, start + length_px + step / 2, step)
    if math.isinf(radius_px):
        return np.column_stack([s * math.sin(theta), s * math.cos(theta)]), s
    t = theta + s / radius_px
    rows = -radius_px * (np.cos(t) - math.cos(theta))
    cols = radius_px * (np.sin(t) - math.sin(theta))
    return np.column_stack([rows, cols]), s


def _raster_line(points, shape):
    """1-px 8-connected rasterisation of dense (row, col) samples."""
    ri = np.rint(points).astype(np.int64)
    ri = ri[np.r_[True, np.any(np.diff(ri, axis=0) != 0, axis=1)]]
    kept = [ri[0]]
    for j in range(1, len(ri) - 1):
        if np.abs(ri[j + 1] - kept[-1]).max() <= 1:
            continue  # corner pixel: the next one touches the previous kept one
        kept.append(ri[j])
    kept.append(ri[-1])
    img = np.zeros(shape, dtype=bool)
    kept = np.array(kept)
    img[kept[:, 0], kept[:, 1]] = True
    return img


def _check_length(length_px, radius_px, theta, mode, threshold_px=1.5):
    pad = 8
    pts, _ = _centreline(length_px, radius_px, theta)
    offset = -pts.min(axis=0) + pad
    pts = pts + offset
    shape = tuple(int(v) for v in np.ceil(pts.max(axis=0)) + pad + 1)
    if mode == "line":
        img = _raster_line(pts, shape)
    else:
        rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
        d = cKDTree(pts).query(np.column_stack([rr.ravel(), cc.ravel()]))[0].reshape(shape)
        img = d <= threshold_px
    rows, cols = np.nonzero(skeletonize_mask(img))
    cracks, branches = vectorize_skeleton(rows, cols, transform=IDENTITY)
    assert len(cracks) == 1 and len(branches) == 1
    xy = shapely.get_coordinates(branches.geometry.iloc[0])
    ends_rc = xy[[0, -1]][:, ::-1] - 0.5
    ext, s_ext = _centreline(length_px + 24.0, radius_px, theta, start=-12.0)
    _, s_idx = cKDTree(ext + offset).query(ends_rc)
    reference = abs(s_ext[s_idx[1]] - s_ext[s_idx[0]])
    got = cracks.length_px.iloc[0]
    assert abs(got - reference) / reference < 0.02, (got, reference)
    assert branches.length_px.iloc[0] == pytest.approx(got)


_geometry = dict(
    length_px=st.floats(min_value=50.0, max_value=500.0),
    theta=st.floats(min_value=0.0, max_value=2 * math.pi),
    curvature=st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1.0)),
)


def _radius(length_px, curvature):
    """Map a curvature fraction to a radius >= 50 px and at most half a turn of arc."""
    if curvature == 0.0:
        return math.inf
    min_radius = max(50.0, length_px / math.pi)
    return min_radius / max(curvature, 1e-3)


@settings(max_examples=40, deadline=None)
@given(**_geometry)
def test_length_of_rasterised_line_within_2_percent(length_px, theta, curvature):
    _check_length(length_px, _radius(length_px, curvature), theta, "line")


@settings(max_examples=40, deadline=None)
@given(**_geometry, threshold_px=st.floats(min_value=1.0, max_value=3.0))
def test_length_of_thresholded_distance_map_within_2_percent(
    length_px, theta, curvature, threshold_px
):
    _check_length(length_px, _radius(length_px, curvature), theta, "distance", threshold_px)


def test_without_smoothing_an_oblique_line_is_overestimated():
    # The staircase of 1 and sqrt 2 steps at 22.5 deg: about 8 % too long without smoothing.
    img = _raster_line(_centreline(200.0, math.inf, math.radians(22.5))[0] + 5, (100, 200))
    rows, cols = np.nonzero(img)
    raw, _ = vectorize_skeleton(rows, cols, transform=IDENTITY, smoothing_px=0)
    smooth, _ = vectorize_skeleton(rows, cols, transform=IDENTITY)
    assert raw.length_px.iloc[0] / 200.0 > 1.06
    assert abs(smooth.length_px.iloc[0] / 200.0 - 1.0) < 0.01


# --- layers and edge cases -------------------------------------------------------------------
def _check_schema(cracks, branches):
    assert isinstance(cracks, gpd.GeoDataFrame) and isinstance(branches, gpd.GeoDataFrame)
    assert list(cracks.columns) == [*CRACK_COLUMNS, "geometry"]
    assert list(branches.columns) == [*BRANCH_COLUMNS, "geometry"]
    assert {k: str(v) for k, v in cracks.dtypes.drop("geometry").items()} == CRACK_COLUMNS
    dtypes = {k: str(v) for k, v in branches.dtypes.drop(["geometry", "kind"]).items()}
    assert dtypes == {k: v for k, v in BRANCH_COLUMNS.items() if k != "kind"}
    assert pd.api.types.is_string_dtype(branches["kind"])
    assert cracks.crs is None and branches.crs is None


def test_no_pixels_gives_empty_layers_with_schema():
    cracks, branches = _vec([])
    assert len(cracks) == 0 and len(branches) == 0
    _check_schema(cracks, branches)


def test_single_pixel_has_no_line_even_without_length_filter():
    for kwargs in ({}, EXACT):
        cracks, branches = _vec([(5, 7)], **kwargs)
        assert len(cracks) == 0 and len(branches) == 0
        _check_schema(cracks, branches)


def test_tiny_hand_drawn_skeletons_have_exact_lengths():
    t = Affine(0.004, 0.0, 1000.0, 0.0, -0.004, 2000.0)
    cracks, branches = _vec([(0, 0), (0, 1), (1, 2)], transform=t, pixel_size_m=0.004, **EXACT)
    _check_schema(cracks, branches)
    assert cracks.length_px.tolist() == pytest.approx([1 + SQRT2])
    assert cracks.length_m.tolist() == pytest.approx([(1 + SQRT2) * 0.004])
    assert branches.kind.tolist() == ["tip-tip"]
    cracks, _ = _vec([(3, 3), (3, 4)], **EXACT)
    assert cracks.length_px.tolist() == pytest.approx([1.0])
    # L shape: 3 down, 4 right.
    cracks, _ = _vec(_vline(0, 0, 3) + _hline(3, 1, 4), **EXACT)
    assert cracks.length_px.tolist() == pytest.approx([7.0])


def test_straight_lines_length_and_orientation():
    # Identity transform: y grows with rows, so a line going down-right has +45 deg in map axes;
    # with a north-up transform (negative e) the same pixels go down in y: 135 deg.
    horizontal, _ = _vec(_hline(5, 0, 40))
    vertical, _ = _vec(_vline(5, 0, 40))
    diagonal = [(k, k) for k in range(30)]
    diag_id, _ = _vec(diagonal)
    diag_north_up, _ = _vec(diagonal, transform=Affine(1.0, 0.0, 0.0, 0.0, -1.0, 100.0))
    assert horizontal.length_px.iloc[0] == pytest.approx(40.0)
    assert vertical.length_px.iloc[0] == pytest.approx(40.0)
    assert diag_id.length_px.iloc[0] == pytest.approx(29 * SQRT2)
    assert horizontal.orientation_deg.iloc[0] == pytest.approx(0.0, abs=1e-9)
    assert vertical.orientation_deg.iloc[0] == pytest.approx(90.0)
    assert diag_id.orientation_deg.iloc[0] == pytest.approx(45.0)
    assert diag_north_up.orientation_deg.iloc[0] == pytest.approx(135.0)
    for cracks in (horizontal, vertical, diag_id):
        assert cracks.n_branches.tolist() == [1] and cracks.n_junctions.tolist() == [0]
        assert cracks.bridged.tolist() == [False]


def test_t_junction_has_three_branches_meeting_at_one_junction():
    pixels = _hline(20, 0, 40) + _vline(20, 21, 45)
    cracks, branches = _vec(pixels, smoothing_px=0)
    assert len(cracks) == 1
    assert cracks.n_branches.tolist() == [3] and cracks.n_junctions.tolist() == [1]
    assert sorted(branches.kind) == ["junction-tip"] * 3
    assert sorted(branches.length_px) == pytest.approx([20.0, 20.0, 25.0])
    assert cracks.length_px.iloc[0] == pytest.approx(65.0)
    # Every branch touches the junction at pixel (20, 20), i.e. x = 20.5, y = 20.5.
    for g in branches.geometry:
        xy = shapely.get_coordinates(g)
        assert (20.5, 20.5) in {tuple(xy[0]), tuple(xy[-1])}


def test_cross_has_four_branches_and_one_junction():
    pixels = _hline(20, 0, 40) + [p for p in _vline(20, 0, 40) if p != (20, 20)]
    cracks, branches = _vec(pixels, smoothing_px=0)
    assert cracks.n_branches.tolist() == [4] and cracks.n_junctions.tolist() == [1]
    assert sorted(branches.length_px) == pytest.approx([20.0] * 4)
    assert set(branches.kind) == {"junction-tip"}


def test_diagonal_t_junction_is_a_single_junction_pixel():
    # A diagonal branch leaving a horizontal line: triangle diagonals must not make extra nodes.
    pixels = _hline(10, 0, 30) + [(10 + k, 15 + k) for k in range(1, 15)]
    cracks, branches = _vec(pixels, smoothing_px=0)
    assert cracks.n_junctions.tolist() == [1] and len(branches) == 3
    # The junction is (10, 16), 4-adjacent to the branch's first pixel (11, 16).
    assert sorted(branches.length_px) == pytest.approx([14.0, 16.0, 1.0 + 13 * SQRT2])


def test_cycle_is_one_crack_with_one_closed_cycle_branch():
    square = _hline(0, 0, 20) + _vline(20, 1, 20) + _hline(20, 0, 19) + _vline(0, 1, 19)
    cracks, branches = _vec(square, smoothing_px=0)
    assert len(cracks) == 1 and branches.kind.tolist() == ["cycle"]
    assert cracks.n_junctions.tolist() == [0] and cracks.n_branches.tolist() == [1]
    assert cracks.length_px.iloc[0] == pytest.approx(80.0)
    assert branches.geometry.iloc[0].is_closed
    # A pixel circle of radius 15: length 2 pi r within 2 % once smoothed.
    t = np.linspace(0, 2 * np.pi, 2000)
    ring = np.unique(np.rint(np.column_stack([30 + 15 * np.sin(t), 30 + 15 * np.cos(t)])), axis=0)
    ring_img = np.zeros((61, 61), dtype=bool)
    ring_img[ring[:, 0].astype(int), ring[:, 1].astype(int)] = True
    rows, cols = np.nonzero(skeletonize_mask(ring_img))
    cracks, branches = vectorize_skeleton(rows, cols, transform=IDENTITY)
    assert branches.kind.tolist() == ["cycle"]
    assert cracks.length_px.iloc[0] == pytest.approx(2 * np.pi * 15, rel=0.02)


def test_short_spur_is_pruned_and_the_line_merges():
    line = _hline(10, 0, 40)
    spur = _vline(20, 11, 14)  # 4 px spur below pixel (10, 20)
    cracks, branches = _vec(line + spur, smoothing_px=0)
    assert branches.kind.tolist() == ["tip-tip"]
    assert cracks.n_junctions.tolist() == [0]
    assert cracks.length_px.tolist() == pytest.approx([40.0])
    cracks, branches = _vec(line + spur, smoothing_px=0, min_spur_px=0)
    assert len(branches) == 3 and cracks.n_junctions.tolist() == [1]
    # A spur at least min_spur_px long stays.
    cracks, branches = _vec(line + _vline(20, 11, 30), smoothing_px=0)
    assert len(branches) == 3


def test_pruning_cascades_and_never_removes_a_whole_crack():
    # Star of three 6 px arms: two may not both go, one goes, the others become one line.
    star = _hline(10, 4, 16) + _vline(10, 11, 16)
    cracks, branches = _vec(star, smoothing_px=0, min_crack_length_px=0)
    assert len(cracks) == 1 and len(branches) == 1 and branches.kind.tolist() == ["tip-tip"]
    assert cracks.length_px.iloc[0] == pytest.approx(12.0)
    # Fork at a line end (two 3 px arms): the longer line continues through one arm.
    fork = _hline(10, 0, 30) + [(9, 31), (8, 32), (7, 33), (11, 31), (12, 32)]
    cracks, branches = _vec(fork, smoothing_px=0)
    assert len(branches) == 1
    assert cracks.length_px.iloc[0] == pytest.approx(30 + 3 * SQRT2)


def test_two_by_two_block_in_a_line_is_not_a_junction():
    pixels = _hline(10, 0, 20) + [(11, 20), (11, 21), (10, 21)] + _hline(11, 22, 40)
    cracks, branches = _vec(pixels, smoothing_px=0)
    assert len(branches) == 1 and cracks.n_junctions.tolist() == [0]
    assert branches.kind.tolist() == ["tip-tip"]


def test_two_separate_cracks_and_short_ones_dropped():
    pixels = _hline(5, 0, 30) + _vline(40, 20, 60) + _hline(50, 0, 5)  # last: 5 px long
    cracks, branches = _vec(pixels)
    assert cracks.crack_id.tolist() == [1, 2]
    assert cracks.length_px.tolist() == pytest.approx([30.0, 40.0])
    assert branches.crack_id.tolist() == [1, 2] and branches.branch_id.tolist() == [1, 2]
    cracks, _ = _vec(pixels, min_crack_length_px=0)
    assert len(cracks) == 3


def test_all_foreground_blob():
    # As a mask it thins to a short line; given raw it must still give valid layers.
    blob = np.ones((25, 25), dtype=bool)
    rows, cols = np.nonzero(skeletonize_mask(blob))
    cracks, branches = vectorize_skeleton(rows, cols, transform=IDENTITY, min_crack_length_px=0)
    assert len(cracks) == 1
    rows, cols = np.nonzero(blob)
    cracks, branches = vectorize_skeleton(rows, cols, transform=IDENTITY)
    _check_schema(cracks, branches)
    assert len(cracks) <= 1
    assert shapely.is_valid(branches.geometry).all()


def test_input_order_and_duplicates_do_not_matter():
    pixels = np.array(_hline(20, 0, 40) + _vline(20, 21, 45) + _hline(60, 3, 50))
    ref_c, ref_b = _vec(pixels)
    perm = np.random.default_rng(0).permutation(len(pixels))
    shuffled = np.concatenate([pixels[perm], pixels[:7]])
    c, b = _vec(shuffled)
    assert c.drop(columns="geometry").equals(ref_c.drop(columns="geometry"))
    assert shapely.equals(c.geometry, ref_c.geometry).all()
    assert b.drop(columns="geometry").equals(ref_b.drop(columns="geometry"))


# --- widths and confidence -------------------------------------------------------------------
def test_width_and_confidence_statistics():
    pixels = _hline(3, 0, 19)
    width = np.arange(1, 21, dtype=np.float64)  # 1..20 px
    width[0] = np.nan  # unknown somewhere: ignored
    distance = np.full(20, 1.0)  # threshold 2 -> confidence 0.5
    cracks, branches = _vec(
        pixels, width_px=width, distance_px=distance, threshold_px=2.0, pixel_size_m=0.004
    )
    w_mm = np.arange(2, 21) * 4.0
    for layer in (cracks, branches):
        assert layer.width_mean_mm.iloc[0] == pytest.approx(w_mm.mean())
        assert layer.width_max_mm.iloc[0] == pytest.approx(80.0)
        assert layer.width_p95_mm.iloc[0] == pytest.approx(np.percentile(w_mm, 95))
        assert layer.confidence.iloc[0] == pytest.approx(0.5)
    cracks, _ = _vec(pixels, width_px=width, distance_px=np.zeros(20), threshold_px=2.0)
    assert np.isnan(cracks.width_mean_mm.iloc[0])  # no pixel size
    assert cracks.confidence.iloc[0] == pytest.approx(1.0)


def test_input_validation():
    with pytest.raises(ValueError, match="threshold_px"):
        _vec(_hline(0, 0, 20), distance_px=np.zeros(21))
    with pytest.raises(ValueError, match="one value per"):
        _vec(_hline(0, 0, 20), width_px=np.zeros(3))
    with pytest.raises(ValueError, match="pair up"):
        vectorize_skeleton([1, 2], [1], transform=IDENTITY)


# --- tiles and map coordinates ---------------------------------------------------------------
def test_crack_crossing_a_tile_border_is_one_feature():
    rr, cc = np.mgrid[0:80, 0:120].astype(np.float64)
    arc = np.abs(np.hypot(rr - 200.0, cc - 60.0) - 170.0)
    distance = np.minimum(arc, 20.0).astype(np.float32)
    body = np.clip(2.5 - distance, 0, 1).astype(np.float32)
    whole = extract_tile_skeleton(distance, body, threshold_px=1.5, core=(slice(None), slice(None)))
    halo = 16
    left = extract_tile_skeleton(
        distance[:, : 60 + halo],
        body[:, : 60 + halo],
        threshold_px=1.5,
        core=(slice(None), slice(0, 60)),
    )
    right = extract_tile_skeleton(
        distance[:, 60 - halo :],
        body[:, 60 - halo :],
        threshold_px=1.5,
        core=(slice(None), slice(halo, None)),
    )
    assert len(left) and len(right)
    ts = TileSkeleton.concatenate([left, right.shifted(0, 60 - halo)])
    cracks, branches = vectorize_skeleton(
        ts.rows,
        ts.cols,
        transform=IDENTITY,
        width_px=ts.width_px,
        distance_px=ts.distance_px,
        threshold_px=1.5,
        pixel_size_m=0.001,
    )
    ref, _ = vectorize_skeleton(whole.rows, whole.cols, transform=IDENTITY)
    assert len(cracks) == 1 and len(branches) == 1
    assert cracks.length_px.iloc[0] == pytest.approx(ref.length_px.iloc[0])
    assert cracks.width_mean_mm.iloc[0] == pytest.approx(4.0, abs=0.3)  # 4 px x 1 mm


@pytest.mark.parametrize(
    "transform",
    [
        Affine(0.004, 0.0, 512_000.0, 0.0, -0.004, 4_180_000.0),  # north-up, 4 mm pixels
        Affine.translation(512_000.0, 4_180_000.0)
        @ Affine.rotation(30.0)
        @ Affine.scale(0.004, -0.004),
        Affine(0.004, 0.0, 2.0, 0.0, 0.004, 1.0),  # facade frame with rows going up in y
    ],
)
def test_crack_lands_at_expected_map_coordinates(transform):
    # A circular arc drawn at known pixel coordinates: the ends are the mapped centres of the
    # end pixels exactly; every other vertex lies within half a pixel of the mapped centreline
    # (rounding the arc to pixels moves the end pixels by up to 0.7 px, so they are checked
    # against the pixel centres instead).
    centre_r, centre_c, radius = 150.0, 20.0, 120.0
    t = np.linspace(-1.2, -0.2, 4000)
    arc = np.column_stack([centre_r + radius * np.sin(t), centre_c + radius * np.cos(t)])
    img = _raster_line(arc, (160, 160))
    rows, cols = np.nonzero(img)
    cracks, branches = vectorize_skeleton(rows, cols, transform=transform, pixel_size_m=0.004)
    assert len(branches) == 1
    xy = shapely.get_coordinates(branches.geometry.iloc[0])
    ax, ay = transform @ (arc[:, 1] + 0.5, arc[:, 0] + 0.5)
    dist_m, _ = cKDTree(np.column_stack([ax, ay])).query(xy[1:-1])
    assert dist_m.max() < 0.5 * 0.004
    end_pixels = np.rint(arc[[0, -1]])
    ex, ey = transform @ (end_pixels[:, 1] + 0.5, end_pixels[:, 0] + 0.5)
    got_ends = {tuple(np.round(p, 6)) for p in xy[[0, -1]]}
    assert got_ends == {tuple(np.round(p, 6)) for p in np.column_stack([ex, ey])}
    assert cracks.length_m.iloc[0] == pytest.approx(radius * 1.0 * 0.004, rel=0.02)
    assert cracks.length_px.iloc[0] == pytest.approx(radius * 1.0, rel=0.02)
