"""The image-based width through the pipeline: tiles, the sparse skeleton, layers, damage, report.

The method itself is tested in test_width_profile.py; here: a tile measures the same widths as
the whole image, the skeleton carries the widths' uncertainty and limit through the cache, the
crack layer summarises them, and widths below the limit never reach a damage bound.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from affine import Affine

from cracksurvey.damage import parse_damage_scale
from cracksurvey.evaluation.evaluate import width_errors
from cracksurvey.evaluation.synthetic import random_centreline, render_crack
from cracksurvey.io.cache import read_skeleton, write_skeleton
from cracksurvey.measure.width import skeleton_widths
from cracksurvey.measure.width_profile import sample_points
from cracksurvey.report.figures import width_histogram_svg
from cracksurvey.skeleton import SKELETON_FIELDS, TileSkeleton, skeletonize_mask
from cracksurvey.summary import summarize_buildings
from cracksurvey.tiling import tile_grey
from cracksurvey.vectorize import vectorize_skeleton


@pytest.fixture(scope="module")
def crack_image():
    """A curved crack 1.5-6 px wide across a 160 x 320 textured wall, and its skeleton."""
    rng = np.random.default_rng(3)
    shape = (160, 320)
    wall = 150.0 + 8.0 * np.sin(np.arange(shape[1]) / 9.0)[None, :] + rng.normal(0, 2.0, shape)
    pts = random_centreline(shape, rng=rng, curved=True, angle_deg=8.0)
    width = np.linspace(1.5, 6.0, len(pts))
    crack = render_crack(
        wall,
        pts,
        width,
        psf_sigma_px=0.8,
        contrast=0.5,
        noise_sd=1.5,
        jpeg_quality=90,
        rng=rng,
    )
    return crack, skeletonize_mask(crack.mask)


def test_a_tile_measures_what_the_whole_image_does(crack_image):
    crack, skel = crack_image
    rows, cols = np.nonzero(skel)
    whole = skeleton_widths(skel, (rows, cols), grey=crack.image, body=None)
    assert np.isfinite(whole.width_px).mean() > 0.9
    assert np.all(np.isfinite(whole.width_sd_px[np.isfinite(whole.width_px)]))
    halo = 96
    for c0, c1 in ((0, 160), (160, 320)):
        w0, w1 = max(0, c0 - halo), min(320, c1 + halo)
        window = skel[:, w0:w1]
        core = (cols >= c0) & (cols < c1)
        tile = skeleton_widths(
            window,
            (rows[core], cols[core] - w0),
            grey=crack.image[:, w0:w1],
            body=None,
            origin=(0, w0),
        )
        for name in ("width_px", "width_sd_px", "limit_px"):
            np.testing.assert_allclose(
                getattr(tile, name), getattr(whole, name)[core], rtol=0, atol=1e-5
            )
        assert np.array_equal(tile.below_limit, whole.below_limit[core])


def test_samples_do_not_depend_on_the_tile():
    rows = np.full(200, 50)
    cols = np.arange(200)
    whole = sample_points(rows, cols)
    shifted = sample_points(rows - 10, cols - 37, origin=(10, 37))
    assert np.array_equal(whole, shifted)
    # every crack direction is sampled, never two adjacent pixels
    for step in ((0, 1), (1, 1), (1, 2), (2, 1), (1, 3)):
        t = np.arange(300)
        r, c = np.floor(t * step[0] / max(step)).astype(int), np.floor(t * step[1] / max(step))
        picked = np.nonzero(sample_points(r, c))[0]
        assert 0.15 < picked.size / t.size < 0.45
        assert np.diff(picked).min() >= 2 and np.diff(picked).max() <= 12


def test_body_width_only_for_cracks_wider_than_the_profiles(crack_image):
    from scipy import ndimage

    crack, skel = crack_image
    rows, cols = np.nonzero(skel)
    # no band in the image; a narrow body map: no width (the body is not used)
    flat = np.full(crack.image.shape, 150.0) + np.random.default_rng(0).normal(0, 1, skel.shape)
    narrow = ndimage.binary_dilation(skel, iterations=2).astype(np.float32)
    w = skeleton_widths(skel, (rows, cols), grey=flat, body=narrow, max_width_px=40.0)
    assert not np.isfinite(w.width_px).any()
    # a crack 70 px wide: the profiles do not measure it, the body map does
    rng = np.random.default_rng(5)
    shape = (200, 200)
    pts = random_centreline(shape, rng=rng, curved=False, angle_deg=10.0)
    wide = render_crack(
        np.full(shape, 160.0),
        pts,
        70.0,
        psf_sigma_px=0.8,
        contrast=0.5,
        noise_sd=1.0,
        jpeg_quality=None,
        rng=rng,
    )
    skel = skeletonize_mask(wide.mask)
    rows, cols = np.nonzero(skel)
    w = skeleton_widths(
        skel, (rows, cols), grey=wide.image, body=wide.mask.astype(np.float32), max_width_px=40.0
    )
    from_body = np.isfinite(w.width_px) & np.isnan(w.width_sd_px)
    assert from_body.mean() > 0.6 and np.nanmin(w.width_px[from_body]) >= 40
    assert not (np.isfinite(w.width_px) & (w.width_px < 20)).any()  # never a small number


def test_tile_grey_blanks_what_is_outside_the_image():
    rgb = np.full((3, 8, 8), 90, np.uint8)
    invalid = np.zeros((8, 8), bool)
    invalid[0, 0] = True
    grey = tile_grey(rgb, invalid=invalid, origin=(-2, 5), image_size=(20, 9))
    assert np.isnan(grey[:2]).all() and np.isnan(grey[:, 4:]).all()
    assert np.isnan(grey[0, 0]) and grey[2, 0] == 90.0


def test_tile_grey_is_the_mean_of_the_bands_for_every_sum():
    """The uint8 fast path equals numpy's float32 mean bit for bit, for every band sum."""
    total = np.arange(766)
    rgb = np.stack(
        [np.minimum(total, 255), np.clip(total - 255, 0, 255), np.clip(total - 510, 0, 255)]
    ).astype(np.uint8)[:, None, :]
    np.testing.assert_array_equal(tile_grey(rgb), rgb.mean(axis=0, dtype=np.float32))
    other = np.random.default_rng(0).integers(0, 4000, (3, 5, 7)).astype(np.uint16)
    np.testing.assert_array_equal(tile_grey(other), other.mean(axis=0, dtype=np.float32))


def test_skeleton_carries_every_field_through_the_cache(tmp_path):
    sk = TileSkeleton(
        np.array([3, 1, 2]),
        np.array([0, 5, 7]),
        np.array([1.5, np.nan, 2.0]),
        np.array([0.1, 0.2, 0.3]),
        np.array([0.2, np.nan, 0.3]),
        np.array([False, True, False]),
        np.array([1.0, 1.1, 1.2]),
    )
    assert set(sk.arrays()) == set(SKELETON_FIELDS)
    both = TileSkeleton.concatenate([sk, sk.shifted(10, 20)])
    assert len(both) == 6 and both.rows[3] == 13 and both.below_limit[4]
    ordered = both.take(np.lexsort((both.cols, both.rows)))
    assert ordered.rows.tolist() == [1, 2, 3, 11, 12, 13]
    assert ordered.below_limit.tolist() == [True, False, False, True, False, False]
    write_skeleton(tmp_path / "s.npz", ordered)
    back = read_skeleton(tmp_path / "s.npz")
    for name, value in ordered.arrays().items():
        np.testing.assert_array_equal(getattr(back, name), value)
    # without the width's extras: unknown
    old = TileSkeleton(np.array([1]), np.array([2]), np.array([3.0]), np.array([0.5]))
    assert np.isnan(old.width_sd_px[0]) and not old.below_limit[0] and np.isnan(old.limit_px[0])


def test_crack_layer_summarises_widths_below_the_limit():
    cols = np.arange(40)
    rows = np.full(40, 5)
    width = np.where(cols < 10, np.nan, 2.0)
    below = cols < 10
    sd = np.where(np.isfinite(width), 0.4, np.nan)
    cracks, _ = vectorize_skeleton(
        rows,
        cols,
        transform=Affine.identity(),
        width_px=width,
        width_sd_px=sd,
        below_limit=below,
        pixel_size_m=0.001,
        smoothing_px=0,
    )
    row = cracks.iloc[0]
    assert row["width_mean_mm"] == pytest.approx(2.0)
    assert row["width_sd_mm"] == pytest.approx(0.4)
    assert row["width_below_limit"] == pytest.approx(0.25)
    # all below the limit: no width, share 1
    cracks, _ = vectorize_skeleton(
        rows,
        cols,
        transform=Affine.identity(),
        width_px=np.full(40, np.nan),
        below_limit=np.ones(40, bool),
        pixel_size_m=0.001,
    )
    assert np.isnan(cracks["width_max_mm"].iloc[0])
    assert cracks["width_below_limit"].iloc[0] == 1.0


def _summary(width_mean_mm, width_limit_mm):
    cracks = pd.DataFrame(
        {
            "image": ["a"],
            "crack_id": [1],
            "building_id": ["B"],
            "length_m": [2.0],
            "width_max_mm": [width_mean_mm],
            "orientation_deg": [90.0],
            "confidence": [1.0],
        }
    )
    branches = pd.DataFrame(
        {
            "image": ["a"],
            "crack_id": [1],
            "building_id": ["B"],
            "length_m": [2.0],
            "width_mean_mm": [width_mean_mm],
            "confidence": [1.0],
        }
    )
    coverage = pd.DataFrame(
        {
            "image": ["a"],
            "building_id": ["B"],
            "area_m2": [100.0],
            "cpp_fragments": [1],
            "cpp_patches": [1],
        }
    )
    images = pd.DataFrame(
        {
            "image": ["a"],
            "building_id": ["B"],
            "status": ["ok"],
            "detection_limit_mm": [np.nan],
            "width_limit_mm": [width_limit_mm],
        }
    )
    scale = parse_damage_scale(
        {
            "name": "test",
            "levels": [
                {"level": 0, "label": "none", "ems98": "-", "when": {}},
                {"level": 1, "label": "wide", "ems98": "-", "when": {"width_p95_mm": 1.0}},
            ],
        }
    )
    return summarize_buildings(cracks, branches, coverage, images, damage_scale=scale).iloc[0]


def test_widths_below_the_limit_reach_no_damage_bound():
    assert _summary(2.0, 0.5)["damage_level"] == 1
    below = _summary(float("nan"), 0.5)  # the crack's widths are all below the limit
    assert below["damage_level"] == 0 and np.isnan(below["width_p95_mm"])
    coarse = _summary(2.0, 1.5)  # a 1 mm bound under a 1.5 mm limit says nothing
    assert coarse["damage_level"] == 0 and coarse["width_limit_mm"] == 1.5


def test_histogram_marks_the_limit():
    svg = width_histogram_svg([0.3, 2.0, 7.0], [1.0, 2.0, 0.5], limit_mm=1.2)
    assert 'class="limit"' in svg and "limit 1.2 mm" in svg
    assert 'class="limit"' not in width_histogram_svg([2.0], [1.0])


def test_evaluation_reports_the_masks_over_drawing(crack_image):
    crack, skel = crack_image
    from scipy import ndimage

    gt = ndimage.binary_dilation(crack.mask, iterations=1)  # masks drawn about 2 px wider
    rgb = np.repeat(crack.image[None], 3, axis=0)
    out = width_errors(rgb, None, skel, gt, slack_px=2.0)
    assert set(out) == {"error", "error_body", "overdraw"}
    assert out["error"].size > 100 and out["error_body"].size == 0
    assert np.median(out["overdraw"]) > 1.2
    assert np.median(out["error"]) < -1.0  # the image width reads narrower than the mask
