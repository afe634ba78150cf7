"""Tests for cracksurvey.skeleton: threshold, skeletonize, width measurement, tile extraction.

Width accuracy is judged on synthetic cracks of known width:
- float bodies: the exact pixel coverage (8 x 8 supersampling) of a straight band or of an
  annulus (curved crack, centreline radius 3-8 times the width), random angle and offset;
- bool masks: the pixel centres within ``w / 2`` of the centreline, judged against the true
  geometric width ``w`` of the drawn band.
Skeleton pixels closer than ``w + 4`` px to the image border are not scored (the band is cut
there, so there is no crack edge to measure).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from cracksurvey.skeleton import (
    TileSkeleton,
    extract_tile_skeleton,
    measure_width_px,
    skeletonize_mask,
    threshold_distance,
)

WIDTHS_PX = (2.0, 2.6, 3.3, 4.5, 6.0, 7.7, 10.0, 12.4, 15.0, 17.5, 20.0)


def _signed_distance(kind: str, width_px: float, size: int, rng: np.random.Generator):
    """Signed distance function (px) of a random straight ('band') or curved ('ring') crack."""
    theta = rng.uniform(0.0, np.pi)
    r0 = size / 2 + rng.uniform(-1, 1)
    c0 = size / 2 + rng.uniform(-1, 1)
    if kind == "band":
        nr, nc = -np.sin(theta), np.cos(theta)
        return lambda rr, cc: (rr - r0) * nr + (cc - c0) * nc
    radius = rng.uniform(3 * width_px, 8 * width_px) + 20
    rc, cc0 = r0 + radius * np.cos(theta), c0 + radius * np.sin(theta)
    return lambda rr, cc: np.hypot(rr - rc, cc - cc0) - radius


def _draw(kind: str, width_px: float, size: int, rng: np.random.Generator):
    """(coverage float32 body, bool mask of pixel centres) of a crack of width ``width_px``."""
    f = _signed_distance(kind, width_px, size, rng)
    rr, cc = np.mgrid[0:size, 0:size].astype(np.float64)
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    coverage = np.zeros((size, size))
    for a in sub:
        for b in sub:
            coverage += np.abs(f(rr + a, cc + b)) <= width_px / 2
    return (coverage / 64).astype(np.float32), np.abs(f(rr, cc)) <= width_px / 2


def _width_errors(body, mask, width_px: float) -> np.ndarray:
    skeleton = skeletonize_mask(mask)
    rows, cols = np.nonzero(skeleton)
    size = mask.shape[0]
    m = int(width_px + 4)
    inner = (rows >= m) & (rows < size - m) & (cols >= m) & (cols < size - m)
    assert inner.sum() > 20
    width = measure_width_px(body, skeleton, at=(rows[inner], cols[inner]))
    assert np.isfinite(width).all()
    return width.astype(np.float64) - width_px


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


# --- measure_width_px ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["band", "ring"])
def test_width_of_float_body_is_within_half_a_pixel(kind):
    rng = np.random.default_rng(11 if kind == "band" else 12)
    maes = []
    for width_px in WIDTHS_PX:
        body, mask = _draw(kind, width_px, int(4 * width_px + 40), rng)
        err = _width_errors(body, body >= 0.5, width_px)
        maes.append(np.mean(np.abs(err)))
        assert maes[-1] < 0.5, (width_px, maes[-1])
    # Measured: pooled MAE about 0.06-0.07 px.
    assert np.mean(maes) < 0.2


@pytest.mark.parametrize("kind", ["band", "ring"])
def test_width_of_bool_mask_against_true_geometric_width(kind):
    # A bool band covers floor(w) or ceil(w) pixel centres across, so near axis-aligned angles a
    # single band can be off by up to 0.5 px everywhere; over random angles the error averages
    # out. Judged: pooled MAE < 0.5 px and no band biased by more than 0.5 px.
    rng = np.random.default_rng(21 if kind == "band" else 22)
    all_err = []
    for width_px in WIDTHS_PX:
        for _ in range(2):
            _, mask = _draw(kind, width_px, int(4 * width_px + 40), rng)
            err = _width_errors(mask, mask, width_px)
            assert abs(np.mean(err)) < 0.5, (width_px, np.mean(err))
            all_err.append(err)
    # Measured: pooled MAE about 0.2 px.
    assert np.mean(np.abs(np.concatenate(all_err))) < 0.5


def test_width_at_subset_matches_full_measurement():
    rng = np.random.default_rng(3)
    body, mask = _draw("ring", 6.0, 70, rng)
    skeleton = skeletonize_mask(body >= 0.5)
    full = measure_width_px(body, skeleton)
    rows, cols = np.nonzero(skeleton)
    pick = np.arange(0, rows.size, 3)
    part = measure_width_px(body, skeleton, at=(rows[pick], cols[pick]))
    np.testing.assert_array_equal(part, full[pick])


def test_width_falls_back_to_edt_when_the_profile_never_leaves_the_body():
    # A 30 px wide band with max_width_px 10: no edge crossing within 6 px, so 2 * EDT - 1.
    body = np.zeros((80, 80), dtype=np.float32)
    body[25:55, :] = 1.0
    skeleton = np.zeros((80, 80), dtype=bool)
    skeleton[40, 30:50] = True
    width = measure_width_px(body, skeleton, max_width_px=10.0)
    # Nearest background pixel centre is 15 rows away (row 55) -> 2 * 15 - 1 = 29 (true: 30).
    np.testing.assert_allclose(width, 29.0)
    np.testing.assert_allclose(measure_width_px(body, skeleton), 30.0, atol=0.05)


def test_width_is_nan_where_the_body_says_no_crack_and_empty_skeleton_is_empty():
    body = np.zeros((20, 20), dtype=np.float32)
    skeleton = np.zeros((20, 20), dtype=bool)
    assert measure_width_px(body, skeleton).shape == (0,)
    skeleton[10, 3:17] = True
    assert np.isnan(measure_width_px(body, skeleton)).all()


def test_width_nodata_body_reads_as_background_and_shapes_must_match():
    body = np.zeros((30, 30), dtype=np.float32)
    body[12:17, :] = 1.0
    body[17:, :] = np.nan
    skeleton = np.zeros((30, 30), dtype=bool)
    skeleton[14, 8:22] = True
    np.testing.assert_allclose(measure_width_px(body, skeleton), 5.0, atol=0.05)
    with pytest.raises(ValueError, match="same tile grid"):
        measure_width_px(body[:20], skeleton)


def test_all_foreground_tile_gives_a_finite_width():
    body = np.ones((32, 32), dtype=np.float32)
    distance = np.zeros((32, 32), dtype=np.float32)
    ts = extract_tile_skeleton(distance, body, threshold_px=1.0, core=(slice(None), slice(None)))
    assert len(ts) >= 1
    assert np.isfinite(ts.width_px).all() and (ts.width_px >= 1).all()


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


@settings(max_examples=150, deadline=None)
@given(
    shape=st.tuples(st.integers(3, 120), st.integers(3, 120)),
    density=st.floats(0.005, 0.05),
    grow=st.integers(0, 6),
    margin=st.integers(0, 30),
    seed=st.integers(0, 2**16),
)
def test_cropped_edt_equals_the_whole_array_edt(shape, density, grow, margin, seed):
    from cracksurvey.skeleton import _edt_at

    rng = np.random.default_rng(seed)
    mask = ndimage.binary_dilation(rng.random(shape) < density, iterations=grow) if grow else rng.random(shape) < density
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return
    pick = rng.choice(rows.size, size=min(rows.size, 12), replace=False)
    expected = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1][rows[pick], cols[pick]]
    got = _edt_at(mask, rows[pick], cols[pick], margin_px=margin)
    np.testing.assert_array_equal(got, expected)
