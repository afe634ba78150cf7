"""Crack width measured from the image: intensity profiles across the crack at skeleton samples.

Model (:mod:`cracksurvey.measure.profile_model`). Across a crack, the image is the wall's
brightness darkened by a band of width ``w`` and relative depth ``k`` (a shadow: inside the
crack the wall keeps ``1 - k`` of its brightness), seen through the pixel's aperture and a
Gaussian PSF of ``sigma``. The darkness ``1 - image / wall`` integrates to ``k * w`` whatever
the blur.

Samples. Profiles are taken at well-spread skeleton pixels, about one every 4 px along a crack
(:func:`sample_points`: the pixels whose hash of image coordinates is the smallest among their
neighbours); every other pixel takes the values of the nearest sample on its crack. The choice
is in image coordinates and local, so tiles sample the same pixels and, with a halo, give the
widths of the whole image.

Profiles (:mod:`~cracksurvey.measure.profile_locate`, :mod:`~cracksurvey.measure.
profile_strip`). The band is located on a coarse profile along the normal; the fine profile is
the pixels of a strip 3 px long across it, each at the exact offset of its centre from the
band's centre (no interpolation: an oblique band is sampled at many sub-pixel offsets, the
slanted-edge idea of ISO 12233). The wall under the band is the grey closing of the lightly
smoothed image with a square a little wider than the band, levelled by a line through the
medians of ``image / closing`` on its two sides.

Depth and blur (:mod:`~cracksurvey.measure.profile_pool`). Where a crack is several ``sigma``
wide its profile reaches its floor, and ``k``, ``w`` and ``sigma`` are all seen; where it is
narrower, only the darkness area ``k * w`` (and the blurred spread): a thin dark crack and a
wider pale one look alike. So ``k`` and ``sigma`` are shared by the samples of a crack within
``depth_radius_px``, found by a joint robust fit in which its wide parts decide. About one
sample in five (a depth sample) is fitted freely and tabulates its misfit against ``k`` (25
depths) and ``sigma`` (a Gauss-Newton quadratic); each depth sample's neighbourhood sums the
tables, leaving out a sample 2.5 times wider than the neighbourhood's median (a band the crack
crosses: a pipe's shadow, a frame, a joint). A crack narrow everywhere has only weak evidence, the profiles' fine shape, which JPEG ringing
and sharpening distort; its depth comes from a prior (0.5, the middle of the 20-80 % contrasts
seen), raised to the darkest peak seen, and its uncertainty says so (about 45 %). Widths are
then fitted with ``k`` and ``sigma`` fixed and smoothed along the crack (weighted median).

Measurable limit. A width under ``min_width_px`` (one pixel: a crack narrower than a pixel is a
mixed pixel, seen only through its darkness area) or under ``limit_z`` times the noise-only
width uncertainty of its profile is reported as below the limit, not as a number; so is a width
that falls under the limit when ``depth_z`` times its depth's relative uncertainty is taken off
(a crack whose depth rests on the prior may be narrower and darker than it reads).
:func:`measurable_limit_px` gives that limit and :func:`px_to_mm` converts with the ground
sample distance. docs/method.md ("Crack width") has the benchmark and the cost.

Pure functions: arrays in, arrays out. Pixel coordinates are ``(row, col)`` with pixel centres
at integers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.spatial import cKDTree

from .profile_model import TABLE, C, K, S, W, fit_many
from .profile_neighbours import local_minima, nearest, neighbours, pca_normals
from .profile_pool import CrackWidth, aggregate_crack_width, depth_blur_at, smooth_widths
from .profile_strip import take_profiles

__all__ = [
    "CrackWidth",
    "WidthMeasurement",
    "aggregate_crack_width",
    "measurable_limit_px",
    "measure_width_from_image",
    "profile_normals",
    "px_to_mm",
    "sample_points",
]

logger = logging.getLogger(__name__)

#: Wall stretch on each side of the band, how far into it the points enter the fits (the rest
#: level the wall and give the noise only) and the square closing's extra margin (pixels).
_WALL_PX, _FIT_MARGIN_PX, _FILL_MARGIN_PX = 3.0, 1.0, 1.5
#: Half-length (pixels) along the crack of the strip of pixels that makes a profile.
_STRIP_PX = 1.5
#: Default radius (pixels) of the smoothing along the crack, and farthest a point may be from
#: the width sample whose values it takes.
_POOL_PX = 8.0
_ASSIGN_PX = 10.0
#: A band stands out when its peak darkness exceeds this many times the profile's noise.
_SIGNIFICANT = 3.0


@dataclass(frozen=True, eq=False)
class WidthMeasurement:
    """Per-sample crack widths measured from the image.

    Attributes
    ----------
    width_px : ndarray of shape (n,), float64, pixels
        Crack width; NaN where the sample is below the measurable limit or not measured.
    width_sd_px : ndarray of shape (n,), float64, pixels
        Standard uncertainty of the width (noise, texture, misfit and the crack's depth);
        NaN where not measured.
    below_limit : ndarray of shape (n,), bool
        A crack is seen in the profile but it is narrower than ``limit_px``.
    limit_px : ndarray of shape (n,), float64, pixels
        Measurable limit at the sample (:func:`measurable_limit_px`); NaN where not measured.
    measured : ndarray of shape (n,), bool
        A profile was taken and fitted (False at the image border, on nodata, where the dark
        band is wider than ``max_width_px``, or where no darker band is found).
    fitted_width_px : ndarray of shape (n,), float64, pixels
        The sample's own fitted width before smoothing along the crack, also below the
        limit: a diagnostic, not a result.
    centre_offset_px : ndarray of shape (n,), float64, pixels
        Fitted crack centre relative to the sample, along the normal (sub-pixel centreline).
    depth : ndarray of shape (n,), float64
        Relative depth ``k`` of the sample's crack (shared by its ``labels`` group).
    depth_rel_sd : ndarray of shape (n,), float64
        Relative uncertainty of ``depth``; it is common to all samples of the crack.
    psf_sigma_px : ndarray of shape (n,), float64, pixels
        PSF sigma of the sample's crack (shared by its group).
    normal_rc : ndarray of shape (n, 2), float64
        Unit normal along which the profile was taken.
    sampled : ndarray of shape (n,), bool
        A profile was measured at this point itself; the other points take the values of
        the nearest measured sample on their crack (within 10 px).
    """

    width_px: NDArray[np.float64]
    width_sd_px: NDArray[np.float64]
    below_limit: NDArray[np.bool_]
    limit_px: NDArray[np.float64]
    measured: NDArray[np.bool_]
    fitted_width_px: NDArray[np.float64]
    centre_offset_px: NDArray[np.float64]
    depth: NDArray[np.float64]
    depth_rel_sd: NDArray[np.float64]
    psf_sigma_px: NDArray[np.float64]
    normal_rc: NDArray[np.float64]
    sampled: NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.width_px.size)


# --------------------------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------------------------
def profile_normals(
    rows: ArrayLike,
    cols: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    radius_px: float = 5.0,
) -> NDArray[np.float64]:
    """Unit normals of a crack at its samples, from the samples' local principal axis.

    Parameters
    ----------
    rows, cols : ndarray of shape (n,), float or int, pixels
        Sample positions along the crack(s), e.g. skeleton pixels.
    labels : ndarray of shape (n,), int, optional
        Crack of each sample; neighbours on other cracks are ignored. None: one crack.
    radius_px : float
        Neighbourhood radius (pixels) for the local direction.

    Returns
    -------
    normal_rc : ndarray of shape (n, 2), float64
        Unit normal ``(row, col)``, sign arbitrary; ``(1, 0)`` for an isolated sample.

    Examples
    --------
    >>> n = profile_normals([5, 5, 5, 5], [1, 2, 3, 4])  # a horizontal crack
    >>> np.abs(n[1]).round(3).tolist()
    [1.0, 0.0]
    """
    r = np.asarray(rows, dtype=np.float64).ravel()
    c = np.asarray(cols, dtype=np.float64).ravel()
    if r.size == 0:
        return np.zeros((0, 2))
    lab = _labels(labels, r.size)
    indptr, idx = neighbours(r, c, lab, r, c, lab, float(radius_px))
    return pca_normals(r, c, r, c, indptr, idx)


def measurable_limit_px(
    noise_sd: ArrayLike,
    depth: ArrayLike,
    psf_sigma_px: ArrayLike,
    *,
    min_width_px: float = 1.0,
    limit_z: float = 2.0,
) -> NDArray[np.float64]:
    """Narrowest width that one profile tells apart from no crack, in pixels.

    For a crack much narrower than the blur, the fitted width's noise-only standard deviation
    is ``noise_sd * sqrt(2 sqrt(pi) sigma_eff) / depth`` (the matched-filter limit, noise
    correlated over one pixel; ``sigma_eff`` includes the pixel aperture). The limit is
    ``limit_z`` times that, and never under ``min_width_px``.

    Parameters
    ----------
    noise_sd : float or ndarray
        Standard deviation of the profile's darkness noise (image noise plus texture), as a
        fraction of the wall's brightness.
    depth : float or ndarray
        Relative depth ``k`` of the crack (0-1).
    psf_sigma_px : float or ndarray, pixels
        PSF sigma.
    min_width_px : float
        Floor of the limit (pixels).
    limit_z : float
        Multiple of the noise-only width uncertainty.

    Returns
    -------
    limit_px : ndarray, float64, pixels

    Examples
    --------
    >>> float(measurable_limit_px(0.01, 0.5, 1.0))
    1.0
    >>> round(float(measurable_limit_px(0.1, 0.2, 1.0)), 2)
    1.92
    """
    noise = np.asarray(noise_sd, dtype=np.float64)
    k = np.maximum(np.asarray(depth, dtype=np.float64), 1e-6)
    sig = np.sqrt(np.asarray(psf_sigma_px, dtype=np.float64) ** 2 + 1.0 / 12.0)
    sd0 = noise * np.sqrt(2.0 * math.sqrt(math.pi) * sig) / k
    return np.maximum(limit_z * sd0, min_width_px)


def px_to_mm(width_px: ArrayLike, gsd_m: float) -> NDArray[np.float64]:
    """Convert widths (or a limit) from pixels to millimetres with the ground sample distance.

    Parameters
    ----------
    width_px : float or ndarray, pixels
    gsd_m : float
        Ground sample distance: metres of wall per pixel.

    Returns
    -------
    width_mm : ndarray, float64, millimetres

    Examples
    --------
    >>> float(px_to_mm(2.5, 0.0011))
    2.75
    """
    return np.asarray(width_px, dtype=np.float64) * (float(gsd_m) * 1000.0)


# --------------------------------------------------------------------------------------------
# Main entry point
# --------------------------------------------------------------------------------------------
def measure_width_from_image(
    grey: ArrayLike,
    rows: ArrayLike,
    cols: ArrayLike,
    *,
    normals: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    psf_sigma_px: float | None = None,
    max_width_px: float = 40.0,
    min_width_px: float = 1.0,
    limit_z: float = 2.0,
    depth_z: float = 0.5,
    search_px: float = 2.5,
    sample_radius_px: float = 2.0,
    depth_sample_radius_px: float = 2.9,
    pool_radius_px: float | None = None,
    depth_radius_px: float = 32.0,
    direction_radius_px: float = 5.0,
    origin: tuple[int, int] = (0, 0),
    targets: ArrayLike | None = None,
) -> WidthMeasurement:
    """Measure crack width from the image's intensity profiles at samples along the crack.

    Profiles are taken at well-spread points of each crack, about one every 3-5 px
    (:func:`sample_points`, ``sample_radius_px``); every point then takes the values of the
    nearest sample on its crack. At each sample the dark band is located on the normal within
    ``search_px`` of the sample; the profile is the pixels of a strip 3 px long across the
    band, each at its exact offset from the band's centre (no interpolation); the wall under
    the band comes from a local grey closing levelled on the band's two sides. The depth ``k``
    and PSF ``sigma`` are shared by the samples of a crack within ``depth_radius_px``: about one
    sample in five (``depth_sample_radius_px``) is fitted freely and tabulates its misfit over
    depths, and each neighbourhood's tables are combined in a robust joint estimate. Every
    width is then fitted with them, and replaced by the weighted median of the widths within
    ``pool_radius_px`` on the same crack (weights: inverse variance, inflated by each profile's
    misfit). See the module docstring.

    Parameters
    ----------
    grey : ndarray of shape (H, W), float or int
        Image brightness, one band (e.g. the mean of R, G and B). NaN is nodata.
    rows, cols : ndarray of shape (n,), float or int, pixels
        Points on the crack (e.g. skeleton pixels), within ``search_px`` of its centreline.
    normals : ndarray of shape (n, 2), float, optional
        Unit normals ``(row, col)``. None: from the points (:func:`profile_normals`).
    labels : ndarray of shape (n,), int, optional
        Crack of each point (e.g. the skeleton's connected components): depth, blur and
        widths are pooled within a crack. None: one crack.
    psf_sigma_px : float, optional
        PSF sigma (pixels, without the pixel aperture) if known; None: estimated.
    max_width_px : float
        Widest crack measured (pixels); wider dark bands are not measured.
    min_width_px : float
        Floor of the measurable limit (pixels), see :func:`measurable_limit_px`.
    limit_z : float
        Multiple of the noise-only width uncertainty that sets the limit.
    depth_z : float
        A width is reported as a number only if ``width * (1 - depth_z * depth_rel_sd)`` is
        still above the limit.
    search_px : float
        How far from the point (pixels, along the normal) the band's centre may lie.
    sample_radius_px, depth_sample_radius_px : float
        No two width samples (depth samples) closer than this (pixels): about one sample
        every 3-5 (5) px along a crack (:func:`sample_points`).
    pool_radius_px : float, optional
        Radius (pixels) of the robust smoothing of the widths along the crack (default 8);
        0 keeps each sample's fit.
    depth_radius_px : float
        Radius (pixels) within which samples of a crack share their depth and blur.
    direction_radius_px : float
        Neighbourhood radius (pixels) for normals computed here.
    origin : (int, int)
        Image position of ``grey[0, 0]`` (a tile's offset): the samples are chosen in image
        coordinates, so tiles sample the same points.
    targets : ndarray of shape (n,), bool, optional
        Points whose widths are wanted (a tile's core); only the samples they need are
        measured. None: all.

    Returns
    -------
    WidthMeasurement
        Per-point widths, uncertainties and flags, in the order of ``rows``/``cols``.
    """
    img = np.asarray(grey, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"grey has shape {img.shape}; expected (rows, cols). Pass one band.")
    r_all = np.asarray(rows, dtype=np.float64).ravel()
    c_all = np.asarray(cols, dtype=np.float64).ravel()
    if r_all.shape != c_all.shape:
        raise ValueError(
            f"rows has {r_all.size} values but cols has {c_all.size}; they must align."
        )
    n = r_all.size
    lab = _labels(labels, n)
    pool_r = float(_POOL_PX if pool_radius_px is None else pool_radius_px)
    assign_r = _ASSIGN_PX
    out = _empty_result(n)
    bad_px = ~np.isfinite(img)
    if n == 0 or bad_px.all():
        return WidthMeasurement(**out)
    img, bad = fill_nodata(img, bad_px)

    # Samples: width samples near the targets, depth samples a little farther.
    want = np.ones(n, bool) if targets is None else np.asarray(targets, bool).ravel()
    is_w, is_d = sample_points(
        r_all,
        c_all,
        radius_px=(sample_radius_px, depth_sample_radius_px),
        labels=lab,
        origin=origin,
    )
    # A crack without a depth sample (a short fragment) measures its depth at its width samples.
    is_d |= is_w & ~np.isin(lab, np.unique(lab[is_d]))
    cand = np.nonzero(is_w | is_d)[0]
    to_target = _distance_to(r_all[cand], c_all[cand], r_all[want], c_all[want])
    near_w = is_w[cand] & (to_target <= assign_r + pool_r)
    near_d = is_d[cand] & (to_target <= assign_r + pool_r + depth_radius_px)
    keep = near_w | near_d
    smp, as_w, as_d = cand[keep], near_w[keep], near_d[keep]
    if not as_w.any():
        return WidthMeasurement(**out)
    rs, cs, ls = r_all[smp], c_all[smp], lab[smp]
    if normals is None:
        indptr, idx = neighbours(rs, cs, ls, r_all, c_all, lab, float(direction_radius_px))
        nrm = pca_normals(rs, cs, r_all, c_all, indptr, idx)
    else:
        nrm = np.asarray(normals, dtype=np.float64).reshape(n, 2)[smp]
        nrm = nrm / np.maximum(np.hypot(nrm[:, 0], nrm[:, 1]), 1e-12)[:, None]

    sig_guess = 1.2 if psf_sigma_px is None else float(psf_sigma_px)
    tail = 3.0 * max(sig_guess, 0.8) + 1.0
    fill = 2.0 * max(sig_guess, 0.8) + _FILL_MARGIN_PX
    ok, centre, _, s, d, wt, m, noise, n_used, theta0, lower, upper = take_profiles(
        img,
        bad,
        rs,
        cs,
        np.ascontiguousarray(nrm),
        tail,
        float(max_width_px),
        float(search_px),
        _WALL_PX,
        _FIT_MARGIN_PX,
        _STRIP_PX,
        fill,
        sig_guess,
        _SIGNIFICANT,
        TABLE,
    )
    length = n_used / (2.0 * _STRIP_PX)
    ok_w = ok & as_w
    if not ok_w.any():
        logger.debug("width: none of %d samples gave a usable profile", smp.size)
        return WidthMeasurement(**out)
    # Depth and blur at the width samples, from the free fits of the depth samples near them.
    dep = np.nonzero(ok & as_d)[0]
    wi = np.nonzero(ok_w)[0]
    theta4, _, _ = fit_many(
        s, d, wt, m, theta0, lower, upper, np.array([K, W, C, S]), dep, 40, TABLE
    )
    depth, depth_rel, sigma = depth_blur_at(
        (rs, cs, ls),
        wi,
        dep,
        theta4,
        noise,
        n_used,
        length,
        depth_radius_px,
        psf_sigma_px,
        (s, d, wt, m, lower, upper),
    )
    # Widths at the width samples with the depth and blur fixed; then smoothed along the crack.
    has_k = np.isfinite(depth)
    fin = wi[has_k[wi]]
    theta = theta0.copy()
    # start: the moments' darkness area at the new depth
    theta[fin, W] = theta0[fin, K] * theta0[fin, W] / depth[fin]
    theta[fin, K] = depth[fin]
    theta[fin, S] = sigma[fin]
    theta2, var2, sse2 = fit_many(
        s, d, wt, m, theta, lower, upper, np.array([W, C]), fin, 40, TABLE
    )
    use = np.zeros(smp.size, bool)
    use[fin] = True
    w_fit = np.where(use, theta2[:, W], np.nan)
    # A profile the model does not fit (a texture edge, a crossing joint) is less trustworthy
    # than its noise says: its variance is scaled by its normalised misfit.
    with np.errstate(all="ignore"):
        misfit = np.maximum(sse2 / (noise**2 * n_used), 1.0)
    var_fit = np.where(use, noise**2 * var2[:, W] * misfit, np.nan)
    w_rep, var_rep = w_fit.copy(), var_fit.copy()
    if pool_r > 0 and fin.size:
        indptr, idx = neighbours(rs[fin], cs[fin], ls[fin], rs[fin], cs[fin], ls[fin], pool_r)
        w_rep[fin], var_rep[fin] = smooth_widths(w_fit[fin], var_fit[fin], indptr, idx)
    limit = measurable_limit_px(noise, depth, sigma, min_width_px=min_width_px, limit_z=limit_z)
    # above the limit only if it stays there with depth_z of its depth uncertainty taken off
    below = use & (w_rep * (1.0 - depth_z * depth_rel) < limit)
    per_sample = dict(
        width_px=np.where(use & ~below, w_rep, np.nan),
        width_sd_px=np.where(use, np.sqrt(var_rep + (w_rep * depth_rel) ** 2), np.nan),
        below_limit=below,
        limit_px=np.where(use, limit, np.nan),
        measured=use,
        fitted_width_px=w_fit,
        centre_offset_px=np.where(use, theta2[:, C] + centre, np.nan),
        depth=np.where(use, depth, np.nan),
        depth_rel_sd=np.where(use, depth_rel, np.nan),
        psf_sigma_px=np.where(use, sigma, np.nan),
        normal_rc=nrm,
    )
    # Every point takes the values of the nearest measured width sample on its crack.
    src = _nearest(r_all, c_all, lab, rs[fin], cs[fin], ls[fin], assign_r)
    has = src >= 0
    if bad_px.any():  # a point on nodata is never measured
        h, w = bad_px.shape
        ri = np.clip(np.rint(r_all).astype(np.int64), 0, h - 1)
        ci = np.clip(np.rint(c_all).astype(np.int64), 0, w - 1)
        has &= ~bad_px[ri, ci]
    pick = fin[src[has]]
    for key, values in per_sample.items():
        out[key][has] = values[pick]
    out["sampled"][smp[fin]] = True
    return WidthMeasurement(**out)


def _labels(labels: ArrayLike | None, n: int) -> NDArray[np.int64]:
    lab = np.zeros(n, np.int64) if labels is None else np.asarray(labels).ravel()
    if lab.size != n:
        raise ValueError(f"labels has {lab.size} values for {n} samples; they must align.")
    return lab.astype(np.int64, copy=False)


def _empty_result(n: int) -> dict[str, NDArray]:
    nan = np.full(n, np.nan)
    return dict(
        width_px=nan.copy(),
        width_sd_px=nan.copy(),
        below_limit=np.zeros(n, bool),
        limit_px=nan.copy(),
        measured=np.zeros(n, bool),
        fitted_width_px=nan.copy(),
        centre_offset_px=nan.copy(),
        depth=nan.copy(),
        depth_rel_sd=nan.copy(),
        psf_sigma_px=nan.copy(),
        normal_rc=np.tile([1.0, 0.0], (n, 1)),
        sampled=np.zeros(n, bool),
    )


def _distance_to(r, c, tr, tc) -> NDArray[np.float64]:
    """Distance from each point to the nearest target (inf without targets)."""
    if tr.size == 0:
        return np.full(r.size, np.inf)
    d, _ = cKDTree(np.column_stack([tr, tc])).query(np.column_stack([r, c]))
    return np.asarray(d, dtype=np.float64)


def _nearest(r, c, lab, sr, sc, slab, radius) -> NDArray[np.int64]:
    """Index of the nearest sample on the same crack within ``radius`` (-1: none)."""
    if sr.size == 0:
        return np.full(r.size, -1, np.int64)
    return nearest(r, c, lab, sr, sc, slab, float(radius))


def fill_nodata(img: np.ndarray, bad_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodata filled with the nearest valid value; the pixels no profile may use.

    The unusable pixels are the nodata dilated twice by the 4-neighbourhood. When the valid
    pixels form one rectangle (a tile at the image border: beyond it is no image) the nearest
    valid pixel is the clamped position and the dilation shrinks the rectangle by 2 on the
    sides that border nodata: the same result as the distance transform at a fraction of its
    cost.
    """
    if not bad_px.any():
        return np.ascontiguousarray(img), np.zeros(img.shape, bool)
    valid = ~bad_px
    rows = np.flatnonzero(valid.any(axis=1))
    cols = np.flatnonzero(valid.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if valid[r0:r1, c0:c1].all() and (r1 - r0) * (c1 - c0) == np.count_nonzero(valid):
        near_r = np.clip(np.arange(img.shape[0]), r0, r1 - 1)
        near_c = np.clip(np.arange(img.shape[1]), c0, c1 - 1)
        filled = img[np.ix_(near_r, near_c)]
        bad = np.ones(img.shape, bool)
        # Shrunk by 2 only on the sides that border nodata (none lies beyond the array).
        h, w = img.shape
        top, bottom = (r0 + 2 if r0 else 0), (r1 - 2 if r1 < h else h)
        left, right = (c0 + 2 if c0 else 0), (c1 - 2 if c1 < w else w)
        if bottom > top and right > left:
            bad[top:bottom, left:right] = False
        return np.ascontiguousarray(filled), bad
    _, (near_r, near_c) = ndimage.distance_transform_edt(bad_px, return_indices=True)
    bad = ndimage.binary_dilation(bad_px, iterations=2)
    return np.ascontiguousarray(img[near_r, near_c]), bad


def sample_points(
    rows: ArrayLike,
    cols: ArrayLike,
    *,
    radius_px: float | tuple[float, ...] = 1.5,
    labels: ArrayLike | None = None,
    origin: tuple[int, int] = (0, 0),
) -> NDArray[np.bool_]:
    """Which points are profile samples: those whose pixel hash is the smallest within
    ``radius_px`` (among the points of the same crack).

    The hash is a fixed pseudo-random number of the pixel's image coordinates (``origin``
    added), so every tile picks the same pixels, and the choice depends only on the points
    within ``radius_px``. Samples are well spread along a crack at any angle: no two closer
    than ``radius_px``, about one every 3 px for 1.5 (the 8-neighbours of a skeleton pixel) and
    one every 5 px for 2.9; the samples of a larger radius are among those of a smaller one.
    (A regular lattice such as ``(row + 2 col) mod 5`` misses whole cracks whose step pattern
    repeats with it, e.g. at 26.6°.)

    Several radii give one row each (one search).

    Examples
    --------
    >>> pts = sample_points(np.zeros(9000), np.arange(9000))
    >>> round(float(pts.mean()), 2)
    0.33
    """
    r = np.asarray(rows, dtype=np.float64).ravel()
    c = np.asarray(cols, dtype=np.float64).ravel()
    lab = _labels(labels, r.size)
    ri = np.rint(r).astype(np.int64) + int(origin[0])
    ci = np.rint(c).astype(np.int64) + int(origin[1])
    key = _pixel_hash(ri, ci)
    radii = np.atleast_1d(np.asarray(radius_px, dtype=np.float64))
    out = local_minima(r, c, lab, key.view(np.int64), radii)
    return out if np.ndim(radius_px) else out[0]


def _pixel_hash(r: NDArray[np.int64], c: NDArray[np.int64]) -> NDArray[np.uint64]:
    """A well-mixed 64-bit hash of pixel coordinates (splitmix64 of the packed pair)."""
    with np.errstate(over="ignore"):
        x = (r.astype(np.uint64) << np.uint64(32)) ^ (c.astype(np.uint64) & np.uint64(0xFFFFFFFF))
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
