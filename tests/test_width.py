"""Tests for cracksurvey.measure.width: crack width measured on the body map.

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

from cracksurvey.measure.width import measure_width_px
from cracksurvey.skeleton import extract_tile_skeleton, skeletonize_mask

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


@settings(max_examples=150, deadline=None)
@given(
    shape=st.tuples(st.integers(3, 120), st.integers(3, 120)),
    density=st.floats(0.005, 0.05),
    grow=st.integers(0, 6),
    margin=st.integers(0, 30),
    seed=st.integers(0, 2**16),
)
def test_cropped_edt_equals_the_whole_array_edt(shape, density, grow, margin, seed):
    from cracksurvey.measure.width import _edt_at

    rng = np.random.default_rng(seed)
    mask = (
        ndimage.binary_dilation(rng.random(shape) < density, iterations=grow)
        if grow
        else rng.random(shape) < density
    )
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return
    pick = rng.choice(rows.size, size=min(rows.size, 12), replace=False)
    expected = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1][rows[pick], cols[pick]]
    got = _edt_at(mask, rows[pick], cols[pick], margin_px=margin)
    np.testing.assert_array_equal(got, expected)
