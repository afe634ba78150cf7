"""Tests for cracksurvey.evaluation.synthetic: exact partial-pixel widths, geometry, sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from cracksurvey.evaluation.synthetic import (
    geometry_from_crack_map,
    random_centreline,
    random_wall_crop,
    random_width_profile,
    render_coverage,
    render_crack,
    skeleton_samples,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _darkness_per_length(crack, background: float, contrast: float, margin: int = 20) -> float:
    """Integrated darkness per unit centreline length, over the inner part of the image."""
    h, w = crack.image.shape[-2:]
    pts = crack.centreline_rc
    inner = (
        (pts[:, 0] > margin)
        & (pts[:, 0] < h - margin)
        & (pts[:, 1] > margin)
        & (pts[:, 1] < w - margin)
    )
    rr, cc = np.mgrid[0:h, 0:w]
    _, owner = cKDTree(pts).query(np.column_stack([rr.ravel(), cc.ravel()]))
    sel = inner[owner].reshape(h, w)
    length = np.hypot(*np.diff(pts[inner], axis=0).T).sum()
    dark = (1.0 - crack.image / background)[sel].sum()
    return float(dark / length / contrast)


@pytest.mark.parametrize("width_px", [0.5, 1.0, 1.7, 3.3, 7.7])
@pytest.mark.parametrize("curved", [False, True])
def test_partial_pixel_widths_are_exact_without_blur(width_px, curved):
    rng = np.random.default_rng(int(width_px * 10) + curved)
    tex = np.full((128, 128), 200.0)
    pts = random_centreline((128, 128), rng=rng, curved=curved)
    crack = render_crack(
        tex, pts, width_px, psf_sigma_px=0.0, contrast=0.5, noise_sd=0.0, jpeg_quality=None, rng=rng
    )
    assert _darkness_per_length(crack, 200.0, 0.5) == pytest.approx(width_px, rel=0.02)
    # Coverage says the same thing as the image.
    assert crack.coverage.max() <= 1.0 and crack.coverage.min() >= 0.0


def test_blur_keeps_the_darkness_area():
    rng = np.random.default_rng(3)
    tex = np.full((128, 128), 180.0)
    pts = random_centreline((128, 128), rng=rng, curved=True)
    crack = render_crack(
        tex, pts, 2.2, psf_sigma_px=1.2, contrast=0.4, noise_sd=0.0, jpeg_quality=None, rng=rng
    )
    assert _darkness_per_length(crack, 180.0, 0.4) == pytest.approx(2.2, rel=0.03)
    # Blur lowers the peak: a 2.2 px band at sigma 1.2 does not reach its full depth.
    assert (1 - crack.image / 180.0).max() < 0.4 * 0.95


def test_noise_jpeg_and_colour_textures():
    rng = np.random.default_rng(4)
    tex = np.stack([np.full((64, 64), v) for v in (180.0, 150.0, 120.0)])
    pts = random_centreline((64, 64), rng=rng, curved=False, angle_deg=30)
    crack = render_crack(
        tex, pts, 3.0, psf_sigma_px=0.8, contrast=0.6, noise_sd=3.0, jpeg_quality=75, rng=rng
    )
    assert crack.image.shape == (3, 64, 64)
    assert crack.image.dtype == np.float32
    assert 0.0 <= crack.image.min() and crack.image.max() <= 255.0
    # Integers after the JPEG round trip.
    assert np.array_equal(crack.image, np.round(crack.image))
    assert crack.mask.shape == (64, 64) and crack.mask.any()


def test_centreline_crosses_the_image_and_respects_curvature():
    rng = np.random.default_rng(5)
    for angle in (0.0, 37.0, 90.0, 145.0):
        pts = random_centreline(
            (100, 140), rng=rng, curved=True, angle_deg=angle, min_radius_px=25.0
        )
        assert pts[:, 0].min() < 5 or pts[:, 1].min() < 5
        assert pts[:, 0].max() > 95 or pts[:, 1].max() > 135
        d = np.diff(pts, axis=0)
        heading = np.unwrap(np.arctan2(d[:, 0], d[:, 1]))
        curvature = np.abs(np.diff(heading)) / 0.1
        assert curvature.max() <= 1.0 / 25.0 * 1.05


def test_width_profiles():
    rng = np.random.default_rng(6)
    pts = random_centreline((128, 128), rng=rng, curved=False)
    const = random_width_profile(pts, rng=rng, kind="constant")
    assert np.ptp(const) == 0 and 0.5 <= const[0] <= 12.0
    var = random_width_profile(pts, rng=rng, kind="varying", width_range_px=(1.0, 8.0))
    assert var.min() >= 1.0 - 1e-9 and var.max() <= 8.0 + 1e-9
    assert var.max() / var.min() > 1.3
    with pytest.raises(ValueError, match="kind"):
        random_width_profile(pts, rng=rng, kind="zigzag")  # type: ignore[arg-type]


def test_crack_map_geometry_gives_twice_the_centreline_to_edge_distance():
    factor = 4
    cmap = np.zeros((64 * factor, 64 * factor), bool)
    cmap[100:113, :] = True  # a band 13 map px wide: 3.25 image px
    coverage, skel_rc, width = geometry_from_crack_map(cmap, factor=factor)
    inner = (skel_rc[:, 1] > 5) & (skel_rc[:, 1] < 58)
    assert np.allclose(width[inner], 13 / factor)
    assert np.allclose(skel_rc[inner, 0], (106 + 0.5) / factor - 0.5)
    rng = np.random.default_rng(7)
    image = render_coverage(
        np.full((64, 64), 150.0),
        coverage,
        supersample=factor,
        psf_sigma_px=0.0,
        contrast=0.5,
        noise_sd=0.0,
        jpeg_quality=None,
        rng=rng,
    )
    dark = (1 - image / 150.0).sum(axis=0) / 0.5
    assert np.allclose(dark, 13 / factor)
    with pytest.raises(ValueError, match="multiples"):
        geometry_from_crack_map(cmap[:-1], factor=factor)


def test_skeleton_samples_are_whole_pixels_near_the_centreline():
    rng = np.random.default_rng(8)
    pts = random_centreline((96, 96), rng=rng, curved=True)
    crack = render_crack(
        np.full((96, 96), 150.0),
        pts,
        2.0,
        psf_sigma_px=0.8,
        contrast=0.5,
        noise_sd=0.0,
        jpeg_quality=None,
        rng=rng,
    )
    rows, cols, true_w = skeleton_samples(
        crack.centreline_rc,
        crack.width_px,
        crack.normal_rc,
        (96, 96),
        rng=rng,
        jitter_px=0.5,
        margin_px=2,
    )
    assert rows.dtype == np.int64 and rows.size > 60
    assert rows.min() >= 2 and rows.max() < 94 and cols.min() >= 2 and cols.max() < 94
    assert len(set(zip(rows.tolist(), cols.tolist()))) == rows.size
    d, _ = cKDTree(pts).query(np.column_stack([rows, cols]))
    assert d.max() < 3.0 and np.allclose(true_w, 2.0)


def test_wall_crop_honours_the_mask_and_gives_up():
    rng = np.random.default_rng(9)
    img = np.full((100, 100), 150.0) + rng.normal(0, 2, (100, 100))
    mask = np.zeros((100, 100), bool)
    mask[:50, :50] = True
    crop = random_wall_crop(img, (40, 40), rng=rng, wall_mask=mask)
    assert crop is not None and crop.shape == (40, 40)
    assert random_wall_crop(img, (60, 60), rng=rng, wall_mask=mask, max_tries=20) is None
    assert random_wall_crop(img, (200, 20), rng=rng) is None


@pytest.mark.skipif(
    not (DATA / "crackmaps_rezaie2020").is_dir(),
    reason="../shared/data/crackmaps_rezaie2020 (real crack maps) is absent",
)
def test_real_crack_map_gives_plausible_widths():
    from PIL import Image

    path = sorted((DATA / "crackmaps_rezaie2020").glob("crackmap_*.png"))[0]
    cmap = np.asarray(Image.open(path).convert("L")) > 127
    rows, cols = np.nonzero(cmap)
    r0, c0 = int(np.median(rows)) // 4 * 4, int(np.median(cols)) // 4 * 4
    crop = cmap[r0 - 256 : r0 + 256, c0 - 256 : c0 + 256]
    coverage, skel_rc, width = geometry_from_crack_map(crop, factor=4)
    assert width.size > 0 and np.all(width > 0) and np.median(width) < 10
