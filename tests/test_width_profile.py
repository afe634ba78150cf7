"""Tests for cracksurvey.measure: the band model, its fit, and width measured from the image.

The accuracy bars are those of the width issue, on a seeded synthetic benchmark drawn with
:mod:`cracksurvey.evaluation.synthetic` on ``skimage.data.brick()`` (always available): widths
0.5-12 px, constant or varying along the crack, straight or curved at any angle, PSF sigma
0.5-1.2 px, contrast 20-80 %, noise 1-4 grey levels, JPEG 70-95, samples on the true
centreline moved by a skeleton's error. A second benchmark on plain-wall crops of real façade
photos runs when ``../shared/data/negatives`` is present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cracksurvey.evaluation.synthetic import (
    random_centreline,
    random_wall_crop,
    random_width_profile,
    render_crack,
    skeleton_samples,
)
from cracksurvey.measure.profile_model import (
    TABLE,
    C,
    K,
    S,
    W,
    band_darkness,
    band_model,
    fit_band_profiles,
    pool_robust,
)
from cracksurvey.measure.profile_pool import drop_crossings
from cracksurvey.measure.width_profile import (
    CrackWidth,
    aggregate_crack_width,
    fill_nodata,
    measurable_limit_px,
    measure_width_from_image,
    profile_normals,
    px_to_mm,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# --- the band model --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "theta", [(0.5, 3.0, 0.2, 1.0), (0.3, 0.6, -0.4, 0.5), (0.8, 12.0, 1.0, 1.2)]
)
def test_band_area_is_depth_times_width_whatever_the_blur(theta):
    s = np.arange(-30, 30, 0.01)[None, :]
    d, _ = band_darkness(np.array([theta]), s, jacobian=False)
    assert d.sum() * 0.01 == pytest.approx(theta[0] * theta[1], rel=1e-4)


def test_band_jacobian_matches_finite_differences():
    th = np.array([[0.4, 1.3, 0.2, 0.8], [0.7, 6.0, -0.5, 1.2]])
    s = np.tile(np.linspace(-8, 8, 33), (2, 1))
    _, jac = band_darkness(th, s, jacobian=True)
    for p in range(4):
        d = np.zeros_like(th)
        d[:, p] = 1e-6
        num = (
            band_darkness(th + d, s, jacobian=False)[0]
            - band_darkness(th - d, s, jacobian=False)[0]
        ) / 2e-6
        assert np.abs(num - jac[..., p]).max() < 1e-6


def test_compiled_model_matches_the_reference():
    """The tabulated, compiled band model agrees with the closed form to far below any noise."""
    th = np.array([[0.4, 1.3, 0.2, 0.8], [0.7, 6.0, -0.5, 1.2], [0.3, 0.1, 0.0, 0.3]])
    s = np.linspace(-12, 12, 97)
    ref, ref_jac = band_darkness(th, np.tile(s, (3, 1)), jacobian=True)
    out, jac = np.empty(s.size), np.empty((s.size, 4))
    for i in range(3):
        band_model(th[i], s, s.size, out, jac, True, TABLE)
        assert np.abs(out - ref[i]).max() < 2e-5
        assert np.abs(jac - ref_jac[i]).max() < 2e-4


def test_fit_recovers_a_noise_free_profile():
    truth = np.array([[0.45, 4.2, 0.3, 0.9], [0.7, 2.5, -0.6, 0.7]])
    s = np.tile(np.arange(-10, 10.01, 0.25), (2, 1))
    d, _ = band_darkness(truth, s, jacobian=False)
    start = np.array([[0.3, 2.0, 0.0, 1.2], [0.4, 4.0, 0.0, 1.0]])
    lower = np.tile([1e-3, 0.02, -10, 0.2], (2, 1))
    upper = np.tile([1.0, 21.0, 10, 3.0], (2, 1))
    theta, var, sse = fit_band_profiles(d, s, np.ones_like(s), start, (K, W, C, S), lower, upper)
    assert np.allclose(theta, truth, atol=2e-3)
    assert np.all(sse < 1e-8) and np.all(var > 0)
    # Fixed parameters keep their start values.
    theta2, var2, _ = fit_band_profiles(
        d, s, np.ones_like(s), truth * [1, 0.5, 0, 1], (W, C), lower, upper
    )
    assert np.allclose(theta2[:, [K, S]], truth[:, [K, S]])
    assert np.allclose(theta2[:, W], truth[:, W], atol=1e-3)
    assert np.all(var2[:, K] == 0)


def test_pool_robust_ignores_an_outlier_and_reports_scatter():
    values = np.array([2.0, 2.1, 1.9, 2.05, 9.0])
    est, se = pool_robust(values, np.full(5, 0.01))
    assert est == pytest.approx(2.05)
    assert se == pytest.approx(1.25 * 0.1 / np.sqrt(5))  # scatter as the variances say
    est, se = pool_robust(values, np.full(5, 1e-4))  # variances far too small for the scatter
    assert se > 5 * 1.25 * 0.01 / np.sqrt(5)
    assert np.isnan(pool_robust(np.array([1.0]), np.array([0.0]))[0])


# --- helpers ---------------------------------------------------------------------------------
def test_normals_of_a_diagonal_crack():
    n = profile_normals(np.arange(20.0), np.arange(20.0))
    assert np.allclose(np.abs(n), np.sqrt(0.5), atol=1e-9)
    alone = profile_normals([5.0], [7.0])
    assert alone.tolist() == [[1.0, 0.0]]


def test_limit_and_mm():
    assert float(measurable_limit_px(0.001, 0.5, 0.8)) == 1.0
    assert float(measurable_limit_px(0.08, 0.2, 1.0)) > 1.0
    lim = measurable_limit_px(np.array([0.01, 0.2]), 0.3, 1.0, min_width_px=0.5)
    assert lim[0] == 0.5 and lim[1] > 2.0
    assert float(px_to_mm(1.0, 0.0005)) == pytest.approx(0.5)


def test_aggregate_crack_width():
    cw = aggregate_crack_width(
        [2.0, 2.4, np.nan, 1.6, np.nan],
        [0.2] * 5,
        [False, False, True, False, False],
        depth_rel_sd=[0.1] * 5,
        limit_px=[1.0] * 5,
    )
    assert isinstance(cw, CrackWidth)
    assert cw.mean_px == pytest.approx(2.0)
    assert cw.max_px == pytest.approx(2.4)
    assert cw.fraction_below_limit == pytest.approx(0.25)
    assert cw.n_samples == 3 and cw.limit_px == 1.0
    # The shared depth term does not average down: 10 % of 2 px at least.
    assert cw.mean_sd_px >= 0.2
    few = aggregate_crack_width([2.0, np.nan], [0.2, np.nan], [False, True])
    assert np.isnan(few.mean_px) and few.fraction_below_limit == 0.5


# --- one crack, controlled -------------------------------------------------------------------
def _crack(
    width_px,
    *,
    shape=(96, 96),
    sigma=0.8,
    contrast=0.5,
    texture=None,
    seed=0,
    angle=None,
    curved=False,
    noise=1.0,
    jpeg=None,
):
    rng = np.random.default_rng(seed)
    tex = np.full(shape, 160.0) if texture is None else texture
    pts = random_centreline(shape, rng=rng, curved=curved, angle_deg=angle)
    crack = render_crack(
        tex,
        pts,
        width_px,
        psf_sigma_px=sigma,
        contrast=contrast,
        noise_sd=noise,
        jpeg_quality=jpeg,
        rng=rng,
    )
    rows, cols, true_w = skeleton_samples(
        crack.centreline_rc, crack.width_px, crack.normal_rc, shape, rng=rng, jitter_px=0.5
    )
    return crack, rows, cols, true_w


def _draw(image, centreline, width, *, sigma, contrast, noise, rng):
    """A band drawn into ``image`` without JPEG (a crack, or something it crosses)."""
    return render_crack(
        image,
        centreline,
        width,
        psf_sigma_px=sigma,
        contrast=contrast,
        noise_sd=noise,
        jpeg_quality=None,
        rng=rng,
    )


@pytest.mark.parametrize("angle", [0.0, 22.5, 45.0, 71.0, 90.0, 133.0])
def test_every_angle_on_a_plain_wall(angle):
    crack, rows, cols, true_w = _crack(3.0, angle=angle, seed=int(angle))
    m = measure_width_from_image(crack.image, rows, cols)
    inner = m.measured
    assert inner.mean() > 0.9
    assert np.nanmean(np.abs(m.width_px[inner] - 3.0)) < 0.15


def test_wide_band_on_a_plain_wall_at_every_depth():
    # A band several blurs wide shows its depth, so its width must come out unbiased at any
    # depth. With the depth searched on coarse steps (before 2026-11-30, sixth session) a 6-px
    # band read 0.16 px narrow on average and up to 0.3 px at some depths.
    errors = []
    for i, k in enumerate(np.linspace(0.25, 0.75, 6)):
        crack, rows, cols, _ = _crack(6.0, shape=(128, 128), sigma=1.0, contrast=k, seed=40 + i)
        m = measure_width_from_image(crack.image, rows, cols)
        errors.append(np.nanmedian(m.width_px) - 6.0)
    errors = np.array(errors)
    # measured: at most 0.12 px, mean +0.05 (before: up to 0.28, mean -0.16)
    assert np.abs(errors).max() < 0.18, errors
    assert abs(errors.mean()) < 0.09, errors


def test_result_does_not_depend_on_sample_order():
    crack, rows, cols, _ = _crack(2.5, seed=3, curved=True)
    m1 = measure_width_from_image(crack.image, rows, cols)
    perm = np.random.default_rng(0).permutation(rows.size)
    m2 = measure_width_from_image(crack.image, rows[perm], cols[perm])
    assert np.allclose(m1.width_px[perm], m2.width_px, equal_nan=True, atol=1e-6)


def test_flat_profile_is_below_the_limit():
    img = np.full((64, 64), 150.0) + np.random.default_rng(1).normal(0, 1.0, (64, 64))
    m = measure_width_from_image(img, [30, 31, 32, 33], [32, 32, 32, 32])
    assert not np.isfinite(m.width_px).any()
    assert np.all(m.below_limit | ~m.measured)


def test_samples_at_the_image_border():
    crack, rows, cols, _ = _crack(3.0, angle=90.0, seed=2)  # a vertical crack
    # Move the samples onto the first and last rows and columns: nothing may fail.
    rows_b = np.concatenate([rows, [0, 95, 0, 95]])
    cols_b = np.concatenate([cols, [0, 0, 95, 95]])
    m = measure_width_from_image(crack.image, rows_b, cols_b)
    assert len(m) == rows_b.size
    assert np.all(np.isfinite(m.width_px) | ~m.measured | m.below_limit)
    on_crack = m.measured[: rows.size]
    assert on_crack.mean() > 0.9
    # A crack cut by the border still measures where the whole profile fits.
    edge = np.full(10, 48)
    crack2 = _draw(
        np.full((96, 96), 160.0),
        np.column_stack([np.arange(-5, 100.0), np.full(105, 3.0)]),
        2.0,
        sigma=0.8,
        contrast=0.5,
        noise=1.0,
        rng=np.random.default_rng(0),
    )
    m2 = measure_width_from_image(crack2.image, np.arange(40, 50), np.full(10, 3))
    ok = np.isfinite(m2.width_px)
    assert not ok.any() or np.all(np.abs(m2.width_px[ok] - 2.0) < 0.5)
    del edge


def test_very_wide_cracks():
    shape = (160, 160)
    crack, rows, cols, _ = _crack(30.0, shape=shape, angle=10.0, seed=4)
    m = measure_width_from_image(crack.image, rows, cols)
    ok = np.isfinite(m.width_px)
    assert ok.mean() > 0.6
    assert np.median(m.width_px[ok]) == pytest.approx(30.0, abs=0.6)
    wide, rows, cols, _ = _crack(70.0, shape=shape, angle=10.0, seed=5)
    m = measure_width_from_image(wide.image, rows, cols, max_width_px=40.0)
    # Wider than max_width_px: not measured, and never a small number.
    reported = m.width_px[np.isfinite(m.width_px)]
    assert (~m.measured).mean() > 0.8
    assert np.all(reported > 20.0)


def test_nodata_is_never_measured_through():
    crack, rows, cols, _ = _crack(3.0, angle=90.0, seed=6)
    img = crack.image.astype(np.float64).copy()
    img[40:50, :] = np.nan
    m = measure_width_from_image(img, rows, cols)
    in_hole = (rows >= 38) & (rows < 52)
    assert not m.measured[in_hole & (rows >= 40) & (rows < 50)].any()
    far = ~in_hole & m.measured
    assert far.sum() > 40
    assert np.nanmean(np.abs(m.width_px[far] - 3.0)) < 0.2
    all_nan = measure_width_from_image(np.full((20, 20), np.nan), [10], [10])
    assert not all_nan.measured.any() and np.isnan(all_nan.width_px).all()


def test_empty_and_bad_inputs():
    m = measure_width_from_image(np.zeros((10, 10)), [], [])
    assert len(m) == 0
    with pytest.raises(ValueError, match="one band"):
        measure_width_from_image(np.zeros((3, 10, 10)), [1], [1])
    with pytest.raises(ValueError, match="align"):
        measure_width_from_image(np.zeros((10, 10)), [1, 2], [1])
    with pytest.raises(ValueError, match="labels"):
        measure_width_from_image(np.zeros((10, 10)), [1, 2], [1, 2], labels=[0])


def test_labels_give_each_crack_its_own_depth():
    """Two cracks of different darkness in one image: pooled apart they measure right."""
    rng = np.random.default_rng(11)
    shape = (96, 160)
    tex = np.full(shape, 160.0)
    pts_a = np.column_stack([np.full(400, 30.0), np.linspace(-5, 165, 400)])
    pts_b = np.column_stack([np.full(400, 66.0), np.linspace(-5, 165, 400)])
    a = _draw(
        tex,
        pts_a,
        np.linspace(1.5, 6.0, 400),
        sigma=1.0,
        contrast=0.7,
        noise=1.0,
        rng=rng,
    )
    both = _draw(
        a.image,
        pts_b,
        np.linspace(6.0, 1.5, 400),
        sigma=1.0,
        contrast=0.25,
        noise=0.0,
        rng=rng,
    )
    cols = np.arange(5, 155)
    rows = np.concatenate([np.full(cols.size, 30), np.full(cols.size, 66)])
    cc = np.concatenate([cols, cols])
    truth = np.interp(cc, pts_a[:, 1], np.linspace(1.5, 6.0, 400))
    truth[cols.size :] = np.interp(cols, pts_b[:, 1], np.linspace(6.0, 1.5, 400))
    labels = np.repeat([0, 1], cols.size)
    m = measure_width_from_image(both.image, rows, cc, labels=labels)
    # depth is shared within depth_radius_px: each crack's wide end shows its own
    assert m.depth[cols.size - 1] == pytest.approx(0.7, abs=0.05)
    assert m.depth[cols.size] == pytest.approx(0.25, abs=0.04)
    err = np.abs(m.width_px - truth)
    assert np.nanmean(err) < 0.15


def test_a_crossing_band_does_not_set_the_depth_of_the_crack_around_it():
    """A thin crack crossed at 45 degrees by a wide, paler band (a pipe's shadow, a frame):
    the band's resolved profiles must not decide the crack's depth within 32 px of it."""
    rng = np.random.default_rng(5)
    shape = (96, 160)
    line = np.linspace(-5, 101, 300)
    pipe = _draw(
        np.full(shape, 160.0),
        np.column_stack([line, line + 32.0]),  # crosses the crack at column 80
        np.full(300, 9.0),
        sigma=1.0,
        contrast=0.3,
        noise=0.0,
        rng=rng,
    )
    crack = _draw(
        pipe.image,
        np.column_stack([np.full(400, 48.0), np.linspace(-5, 165, 400)]),
        np.full(400, 1.5),
        sigma=0.8,
        contrast=0.6,
        noise=1.0,
        rng=rng,
    )
    cols = np.arange(5, 155)
    m = measure_width_from_image(crack.image, np.full(cols.size, 48), cols)
    near = (np.abs(cols - 80) > 8) & (np.abs(cols - 80) < 40)
    # measured 0.27 px (depth 0.50); with the band in the depth pool 0.51 px (depth 0.41)
    assert np.nanmean(np.abs(m.width_px[near] - 1.5)) < 0.4
    assert np.nanmedian(m.depth[near]) > 0.45


def test_crossings_leave_the_depth_pool():
    # three neighbourhoods (CSR): one with a band 4x wider than its median, one all alike,
    # one whose wide member is under the resolved width
    w = np.array([1.0, 1.2, 1.1, 6.0, 2.0, 2.2, 0.4, 0.5, 2.5])
    indptr = np.array([0, 4, 6, 9])
    indices = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8])
    ptr, idx = drop_crossings(indptr, indices, w, 2.5, 3.0)
    assert ptr.tolist() == [0, 3, 5, 8] and idx.tolist() == [0, 1, 2, 4, 5, 6, 7, 8]


def test_known_psf_is_used():
    crack, rows, cols, _ = _crack(1.8, sigma=1.0, seed=7)
    m = measure_width_from_image(crack.image, rows, cols, psf_sigma_px=1.0)
    assert np.all(m.psf_sigma_px[m.measured] == 1.0)
    assert np.nanmean(np.abs(m.width_px - 1.8)) < 0.2


# --- the benchmark at the issue's bars --------------------------------------------------------
def _benchmark(textures, n_cracks, seed, shape=(112, 112)):
    """Per-sample (true, reported, below_limit, sd, crack id, kind) over random cracks."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_cracks):
        tex = None
        while tex is None:
            tex = textures(shape, rng)
        pts = random_centreline(shape, rng=rng, curved=bool(rng.random() < 0.5))
        kind = "constant" if rng.random() < 0.5 else "varying"
        width = random_width_profile(pts, rng=rng, kind=kind)
        crack = render_crack(
            tex,
            pts,
            width,
            psf_sigma_px=rng.uniform(0.5, 1.2),
            contrast=rng.uniform(0.2, 0.8),
            noise_sd=rng.uniform(1, 4),
            jpeg_quality=int(rng.integers(70, 96)),
            rng=rng,
        )
        rows, cols, true_w = skeleton_samples(
            crack.centreline_rc, crack.width_px, crack.normal_rc, shape, rng=rng, jitter_px=0.5
        )
        m = measure_width_from_image(crack.image, rows, cols)
        for j in range(rows.size):
            out.append(
                (
                    true_w[j],
                    m.width_px[j],
                    m.below_limit[j],
                    m.width_sd_px[j],
                    i,
                    kind == "constant",
                )
            )
    return np.array(out, dtype=np.float64)


@pytest.fixture(scope="module")
def brick_benchmark():
    from skimage import data

    brick = data.brick().astype(np.float64)

    def crop(shape, rng):
        r = rng.integers(0, brick.shape[0] - shape[0])
        c = rng.integers(0, brick.shape[1] - shape[1])
        return brick[r : r + shape[0], c : c + shape[1]]

    return _benchmark(crop, n_cracks=24, seed=2024)


def _scores(res, lo=1.5, hi=np.inf):
    true, rep = res[:, 0], res[:, 1]
    sel = (true >= lo) & (true < hi) & np.isfinite(rep)
    err = rep[sel] - true[sel]
    return np.mean(np.abs(err)), np.mean(err), sel.sum()


def test_brick_benchmark_regression_bars(brick_benchmark):
    """What the method reaches on brick() (harsh: bright mortar joints as wide as the cracks).

    Regression bars, looser than the issue's; the issue's MAE and bias bars are the xfail test
    below.
    """
    res = brick_benchmark
    mae, bias, n = _scores(res)
    assert n > 1000
    assert mae <= 0.6 and abs(bias) <= 0.35
    # Most samples of 1.5 px or more are reported as numbers (9 % flagged here: cracks of
    # 1.5-3 px whose depth rests on the prior, not shown to be wider than the limit).
    big = res[:, 0] >= 1.5
    assert np.isfinite(res[big, 1]).mean() >= 0.85
    # Reported uncertainties cover: at least 80 % of errors within two of them.
    sel = big & np.isfinite(res[:, 1])
    assert np.mean(np.abs(res[sel, 1] - res[sel, 0]) <= 2 * res[sel, 3]) >= 0.8


def test_brick_benchmark_crack_means(brick_benchmark):
    """Each crack's mean width (what a crack's width_mean becomes) against its true mean."""
    res = brick_benchmark
    errs = []
    for cid in np.unique(res[:, 4]):
        r = res[res[:, 4] == cid]
        ok = np.isfinite(r[:, 1])
        if ok.sum() >= 3 and r[ok, 0].mean() >= 1.5:
            errs.append(r[ok, 1].mean() - r[ok, 0].mean())
    errs = np.array(errs)
    assert errs.size >= 12
    assert np.mean(np.abs(errs)) <= 0.4 and abs(np.mean(errs)) <= 0.3


@pytest.mark.xfail(
    strict=True,
    reason=(
        "known miss of the issue's bars on brick(): per-sample MAE about 0.4 px and bias about "
        "-0.18 px for widths >= 1.5 px. The wall under a crack is interpolated from its sides and a "
        "grey closing; brick mortar edges next to the crack bias it, and wide cracks on texture "
        "read narrow (the closing under-fills them). A crack narrower than its blur everywhere "
        "does not show its depth, so its width rests on the depth prior."
    ),
)
def test_brick_benchmark_issue_bars(brick_benchmark):
    mae, bias, _ = _scores(brick_benchmark)
    assert mae <= 0.3 and abs(bias) <= 0.2


def test_brick_benchmark_flags_sub_pixel_widths(brick_benchmark):
    """Regression bars: most sub-pixel samples flagged here (a third before a width had to
    stay above the limit with half its depth uncertainty off, three quarters before crossing
    bands left the depth pool, 0.98 now); few samples of 1.5 px or more flagged (12 %)."""
    res = brick_benchmark
    sub = res[:, 0] < 1.0
    assert sub.sum() > 50
    assert (res[sub, 2] == 1).mean() >= 0.6
    big = res[:, 0] >= 1.5
    assert (res[big, 2] == 1).mean() <= 0.15


def test_brick_benchmark_issue_bar_sub_pixel(brick_benchmark):
    """The issue's bar 'widths under 1 px flagged as below the limit', here as 90 %: measured
    0.98 since crossing bands (mortar joints) leave the depth pool (0.77 before, when a pale
    joint's resolved profile set a thin crack's depth low and so its width high)."""
    res = brick_benchmark
    sub = res[:, 0] < 1.0
    assert (res[sub, 2] == 1).mean() >= 0.9


@pytest.fixture(scope="module")
def facade_benchmark():
    if not (DATA / "negatives" / "labelmefacade").is_dir():
        pytest.skip("../shared/data/negatives (real façade photos) is absent")
    from PIL import Image

    lmf = DATA / "negatives" / "labelmefacade"
    walls = []
    for path in sorted((lmf / "images").glob("*.jpg"))[:40]:
        lab = np.asarray(Image.open(lmf / "labels" / (path.stem + ".png")).convert("RGB"))
        mask = (lab[..., 0] == 128) & (lab[..., 1] == 0) & (lab[..., 2] == 0)
        walls.append((np.asarray(Image.open(path).convert("L"), dtype=np.float64), mask))

    def crop(shape, rng):
        img, mask = walls[rng.integers(len(walls))]
        return random_wall_crop(img, shape, rng=rng, wall_mask=mask, max_tries=30)

    return _benchmark(crop, n_cracks=24, seed=7)


def test_facade_wall_benchmark(facade_benchmark):
    res = facade_benchmark
    mae, bias, n = _scores(res)
    assert n > 1000
    assert mae <= 0.6 and abs(bias) <= 0.3
    sub = res[:, 0] < 1.0
    assert (res[sub, 2] == 1).mean() >= 0.6
    # measured 0.097 (depth from 25 tabulated depths), 0.101 (49, refined), 0.103 (crossing
    # bands out of the depth pool): cracks of 1.5-3 px whose depth rests on the prior are
    # flagged by design; the bound catches a rule that flags measurable cracks wholesale
    big = res[:, 0] >= 1.5
    assert (res[big, 2] == 1).mean() <= 0.12


@pytest.mark.xfail(
    strict=True,
    reason=(
        "known miss of the issue's bars on plain-wall façade crops: per-sample MAE about "
        "0.55 px and bias about -0.2 px for widths >= 1.5 px, driven by a few low-contrast "
        "cracks whose depth is uncertain and by wide cracks on texture (widths pooled within "
        "32 px, not over a whole crack); the median error is about 0.3 px"
    ),
)
def test_facade_wall_benchmark_issue_bars(facade_benchmark):
    mae, bias, _ = _scores(facade_benchmark)
    assert mae <= 0.3 and abs(bias) <= 0.2


def test_nodata_fill_of_a_border_tile_equals_the_distance_transform() -> None:
    """The rectangle fast path (tiles at the image border) gives exactly the general result."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    fast = 0
    for trial in range(300):
        h, w = (int(v) for v in rng.integers(5, 60, 2))
        bad = np.ones((h, w), bool)
        r0, c0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        r1, c1 = int(rng.integers(r0 + 1, h + 1)), int(rng.integers(c0 + 1, w + 1))
        bad[r0:r1, c0:c1] = False
        if trial % 3 == 0:  # a hole: the general path
            bad[int(rng.integers(0, h)), int(rng.integers(0, w))] = True
        if bad.all() or not bad.any():
            continue
        img = rng.random((h, w))
        img[bad] = np.nan
        filled, unusable = fill_nodata(img, bad)
        _, (near_r, near_c) = ndimage.distance_transform_edt(bad, return_indices=True)
        assert np.array_equal(filled, img[near_r, near_c]), trial
        assert np.array_equal(unusable, ndimage.binary_dilation(bad, iterations=2)), trial
        fast += trial % 3 != 0
    assert fast > 150


def test_black_regions_beside_a_crack_do_not_break_the_measurement():
    """A crack running into a black area (nodata painted black, a deep shadow): the wall's
    level on a side, or the line through both sides, can be 0 there. The profiles that meet it
    are not measured, and the rest of the crack is; nothing divides by zero (a deepcrack test
    image did, with a model that found a crack next to its black border)."""
    rng = np.random.default_rng(0)
    for trial in range(60):
        img = 120 + rng.normal(0, 5, (96, 96))
        b = int(rng.integers(20, 70))
        if trial % 3 == 0:
            img[:, b:] = 0
        elif trial % 3 == 1:
            img[b:, :] = 0
        else:
            img[b:, b:] = 0
        col = int(rng.integers(10, 86))
        img[:, col : col + 2] *= 0.4
        rows = np.arange(5, 91)
        m = measure_width_from_image(img, rows, np.full(rows.size, col))
        lit = img[rows, col] > 0
        if lit.sum() > 30 and trial % 3 == 1:  # the crack's upper part is on the lit wall
            assert m.measured[lit].mean() > 0.5, trial


@pytest.mark.parametrize("size", [1, 2, 3, 7, 11, 25])
def test_running_extremes_equal_the_window_extremes(size: int):
    """The closing's running max/min (blocks of ``size``, van Herk / Gil-Werman) give each
    window's exact extreme, along rows and along columns, whatever the line length's remainder."""
    from scipy import ndimage

    from cracksurvey.measure.profile_strip import _running

    a = np.random.default_rng(size).normal(size=(31, 29))
    for axis, (di, dj) in ((1, (0, 1)), (0, (1, 0))):
        for is_max, filt in ((True, ndimage.maximum_filter1d), (False, ndimage.minimum_filter1d)):
            # scipy's window for an odd/even size is centred at size // 2: keep the valid part
            ref = filt(a, size, axis=axis, origin=-(size // 2) if size > 1 else 0)
            n = a.shape[axis] - size + 1
            ref = ref[:, :n] if axis == 1 else ref[:n, :]
            got = _running(a, size, is_max, di, dj)
            assert got.shape == ref.shape
            assert np.array_equal(got, ref)
