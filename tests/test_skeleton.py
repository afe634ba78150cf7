"""Tests for cracksurvey.skeleton: threshold, skeletonize, tile extraction (widths included)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cracksurvey.skeleton import (
    TileSkeleton,
    extract_tile_skeleton,
    skeletonize_mask,
    threshold_distance,
)


# --- threshold_distance ----------------------------------------------------------------------
def test_threshold_is_inclusive_and_nan_is_never_crack():
    distance = np.array([[0.0, 2.0, 2.0001, np.nan]], dtype=np.float32)
    mask = threshold_distance(distance, threshold_px=2.0)
    assert mask.dtype == bool
    assert mask.tolist() == [[True, True, False, False]]


def test_threshold_squeezes_a_single_band_and_rejects_more():
    distance = np.zeros((1, 3, 4), dtype=np.float32)
    assert threshold_distance(distance, threshold_px=1.0).shape == (3, 4)
    with pytest.raises(ValueError, match="single band"):
        threshold_distance(np.zeros((2, 3, 4)), threshold_px=1.0)


# --- skeletonize_mask ------------------------------------------------------------------------
def test_skeletonize_squeezes_band_axis_and_thins_in_2d():
    mask = np.zeros((40, 60), dtype=bool)
    mask[15:24, 5:55] = True
    skeleton = skeletonize_mask(mask[None])
    assert skeleton.shape == (40, 60)
    np.testing.assert_array_equal(skeleton, skeletonize_mask(mask))
    rows, cols = np.nonzero(skeleton)
    # One pixel wide: one skeleton pixel per column along the band, on its centre row.
    assert np.bincount(cols)[10:50].max() == 1
    assert set(rows[(cols >= 10) & (cols < 50)].tolist()) == {19}


def test_skeletonize_empty_mask():
    assert not skeletonize_mask(np.zeros((5, 5), dtype=bool)).any()


def test_thin_keeps_a_two_pixel_diagonal_staircase():
    # A 4-connected staircase (pixels (k, k) and (k, k + 1)) is what a thin diagonal crack
    # thresholds to; 'thin' must keep its full extent.
    mask = np.zeros((60, 60), dtype=bool)
    k = np.arange(5, 55)
    mask[k, k] = True
    mask[k, k + 1] = True
    rows, _ = np.nonzero(skeletonize_mask(mask, method="thin"))
    assert rows.min() <= 6 and rows.max() >= 53
    with pytest.raises(ValueError, match="method"):
        skeletonize_mask(mask, method="lee")  # type: ignore[arg-type]


# --- TileSkeleton ----------------------------------------------------------------------------
def test_tile_skeleton_dtypes_shift_concatenate_and_validation():
    a = TileSkeleton([1, 2], [3, 4], [1.5, np.nan], [0.1, 0.2])
    assert a.rows.dtype == np.int64 and a.width_px.dtype == np.float32
    b = a.shifted(10, 100)
    assert b.rows.tolist() == [11, 12] and b.cols.tolist() == [103, 104]
    assert a.rows.tolist() == [1, 2]  # unchanged
    c = TileSkeleton.concatenate([a, b])
    assert len(c) == 4 and c.cols.tolist() == [3, 4, 103, 104]
    assert len(TileSkeleton.concatenate([])) == 0
    assert len(TileSkeleton.empty()) == 0
    with pytest.raises(ValueError, match="align"):
        TileSkeleton([1, 2], [3], [1.0, 1.0], [0.0, 0.0])


# --- extract_tile_skeleton -------------------------------------------------------------------
def _crack_distance_map(shape=(90, 130)):
    """Distance map (px, clipped at 20) of a curved crack plus a straight one, and its body."""
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    d1 = np.abs(np.hypot(rr - 260.0, cc - 60.0) - 230.0)  # arc across the image
    d2 = np.abs((rr - 70.0) * 0.6 - (cc - 20.0) * 0.8)  # straight, 37 deg
    distance = np.minimum(np.minimum(d1, d2), 20.0).astype(np.float32)
    body = np.clip(3.0 - distance, 0.0, 1.0).astype(np.float32)  # about 5 px wide
    return distance, body


def test_extract_keeps_core_pixels_with_their_width_and_distance():
    distance, body = _crack_distance_map()
    core = (slice(10, 60), slice(20, 100))
    ts = extract_tile_skeleton(distance, body, threshold_px=1.5, core=core)
    skeleton = skeletonize_mask(threshold_distance(distance, threshold_px=1.5))
    expected = np.zeros_like(skeleton)
    expected[core] = skeleton[core]
    er, ec = np.nonzero(expected)
    np.testing.assert_array_equal(ts.rows, er)
    np.testing.assert_array_equal(ts.cols, ec)
    assert ts.rows.dtype == np.int64 and ts.distance_px.dtype == np.float32
    np.testing.assert_array_equal(ts.distance_px, distance[er, ec])
    assert (ts.distance_px <= 1.5).all()
    # The body is a 5 px band (edges at distance 2.5).
    assert abs(np.median(ts.width_px) - 5.0) < 0.3


def test_extract_without_body_has_nan_width():
    distance, _ = _crack_distance_map()
    core = (slice(0, 90), slice(0, 130))
    ts = extract_tile_skeleton(distance[None], None, threshold_px=1.5, core=core)
    assert len(ts) > 50 and np.isnan(ts.width_px).all()


def test_extract_nodata_and_empty_tile():
    distance = np.full((40, 40), np.nan, dtype=np.float32)
    ts = extract_tile_skeleton(distance, None, threshold_px=1.0, core=(slice(8, 32), slice(8, 32)))
    assert len(ts) == 0 and ts.rows.dtype == np.int64


@settings(max_examples=12, deadline=None)
@given(
    row_cut=st.integers(min_value=20, max_value=70),
    col_cut=st.integers(min_value=20, max_value=110),
    halo=st.integers(min_value=12, max_value=24),
)
def test_tiled_extraction_equals_untiled(row_cut, col_cut, halo):
    """Cores partition the image; with a halo the stitched skeleton and widths equal untiled."""
    distance, body = _crack_distance_map()
    h, w = distance.shape
    whole = extract_tile_skeleton(distance, body, threshold_px=1.5, core=(slice(None), slice(None)))
    parts = []
    for r0, r1 in ((0, row_cut), (row_cut, h)):
        for c0, c1 in ((0, col_cut), (col_cut, w)):
            rr0, rr1 = max(r0 - halo, 0), min(r1 + halo, h)
            cc0, cc1 = max(c0 - halo, 0), min(c1 + halo, w)
            ts = extract_tile_skeleton(
                distance[rr0:rr1, cc0:cc1],
                body[rr0:rr1, cc0:cc1],
                threshold_px=1.5,
                core=(slice(r0 - rr0, r1 - rr0), slice(c0 - cc0, c1 - cc0)),
            )
            parts.append(ts.shifted(rr0, cc0))
    tiled = TileSkeleton.concatenate(parts)
    order = np.lexsort((tiled.cols, tiled.rows))
    np.testing.assert_array_equal(tiled.rows[order], whole.rows)
    np.testing.assert_array_equal(tiled.cols[order], whole.cols)
    np.testing.assert_allclose(tiled.width_px[order], whole.width_px, atol=1e-4)
