"""Crack width measured from the image: intensity profiles across the crack at skeleton samples.

Model (see :mod:`cracksurvey.measure.profile_model`). Across a crack, the image is the wall's
brightness darkened by a band of width ``w`` and relative depth ``k`` (a shadow: inside the
crack the wall keeps ``1 - k`` of its brightness), seen through the pixel's aperture and a
Gaussian PSF of ``sigma``. The darkness ``1 - image / wall`` integrates to ``k * w`` whatever
the blur.

Profiles. At each sample the profile is the pixels of a strip 3 px long across the crack, each
at the exact offset of its centre from the band's centre: no interpolation, so the model
(band, pixel aperture, Gaussian) holds at every pixel exactly, and an oblique band is sampled
at many sub-pixel offsets (the slanted-edge idea of ISO 12233). Interpolating the image along
the normal instead smooths a one-pixel band differently at each sub-pixel phase, which biases
the width of narrow cracks.

Wall under the crack. The grey closing of the image with a square a little wider than the
band (and its blur) fills the band from its surroundings and keeps texture edges; a line
through the medians of ``image / closing`` on the two sides of the band sets its level.

Identifiability. Where a crack is several ``sigma`` wide its profile reaches its floor, and
``k``, ``w``, ``c`` and ``sigma`` are all seen. Where it is narrower, only the darkness area
``k * w`` (and the blurred spread) is seen: a thin dark crack and a wider pale one look alike.
So ``k`` and ``sigma`` are shared by all samples of a crack (a ``labels`` group) and found by a
joint, robust fit of all its profiles: its wide parts decide them. A crack that is narrow
everywhere has only weak evidence, the profiles' fine shape, which JPEG ringing and camera
sharpening distort (they make a blurred thin line look like a wider, sharper, paler band); so
its depth comes from a prior (0.5, the middle of the 20-80 % contrasts seen), raised to the
darkest peak seen, and its width uncertainty says so (about 45 %).

Measurable limit. A width under ``min_width_px`` (one pixel: a crack narrower than a pixel is a
mixed pixel, seen only through its darkness area) or under ``limit_z`` times the noise-only
width uncertainty of its profile is reported as below the limit, not as a number.
:func:`measurable_limit_px` gives that limit and :func:`px_to_mm` converts with the ground
sample distance.

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
from scipy.special import erf

from .profile_model import C, K, S, W, fit_band_profiles, pool_robust

__all__ = [
    "CrackWidth",
    "WidthMeasurement",
    "aggregate_crack_width",
    "measurable_limit_px",
    "measure_width_from_image",
    "profile_normals",
    "px_to_mm",
]

logger = logging.getLogger(__name__)

#: Search grid for a crack's depth (log-spaced), the finer steps around its minimum, and the
#: log-offsets of sigma tried around the value the profiles' spread gives for each depth.
_K_GRID = np.exp(np.linspace(np.log(0.03), np.log(1.0), 13))
_K_FINE = np.exp(np.linspace(-0.3, 0.3, 9))
_S_OFFSETS = np.array([-0.2, -0.08, 0.0, 0.08, 0.2])
#: At most this many evenly spread samples of a crack enter the joint depth/blur fit.
_MAX_JOINT = 160
#: A crack's profiles share the model's systematic error: they count as at most this many
#: independent profiles for its depth and blur.
_N_EFF = 10.0
#: Model error, as a fraction of a profile's peak darkness (PSF not exactly Gaussian, pixel
#: aperture, interpolation, JPEG).
_MODEL_ERROR = 0.05
#: Weak priors: depth (logit scale) and PSF sigma (log scale, pixels).
_PRIOR_K, _PRIOR_K_SD = 0.5, 0.6
_PRIOR_S, _PRIOR_S_SD = 0.85, 10.0
_K_REL_MAX = 0.25
#: A crack whose freely fitted band is narrower than this (about the FWHM of the widest
#: plausible blur, sigma 1.2 px and the aperture) may be unresolved.
_RESOLVED_PX = 3.0
_PRIOR_K_REL = 0.45
#: Wall stretch on each side of the band (pixels) and the square closing's extra margin.
_WALL_PX = 3.0
_FILL_MARGIN_PX = 1.5
#: Half-length (pixels) along the crack of the strip of pixels that makes a profile, and the
#: resulting pixels per pixel of offset across the crack.
_STRIP_PX = 1.5
_DENSITY = 2.0 * _STRIP_PX
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

    def __len__(self) -> int:
        return int(self.width_px.size)


@dataclass(frozen=True)
class CrackWidth:
    """Width summary of one crack (:func:`aggregate_crack_width`), in pixels.

    ``mean_px``, ``mean_sd_px``, ``p95_px`` and ``max_px`` are NaN when fewer than
    ``min_samples`` samples are above the limit; ``fraction_below_limit`` then says why.
    """

    mean_px: float
    mean_sd_px: float
    p95_px: float
    max_px: float
    fraction_below_limit: float
    n_samples: int
    limit_px: float


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
    out = np.zeros((r.size, 2))
    out[:, 0] = 1.0
    if r.size == 0:
        return out
    lab = np.zeros(r.size, np.int64) if labels is None else np.asarray(labels).ravel()
    for g in np.unique(lab):
        idx = np.nonzero(lab == g)[0]
        pts = np.column_stack([r[idx], c[idx]])
        pairs = cKDTree(pts).query_ball_point(pts, radius_px)
        counts = np.fromiter((len(p) for p in pairs), np.int64, len(pairs))
        flat = np.fromiter((j for p in pairs for j in p), np.int64, int(counts.sum()))
        owner = np.repeat(np.arange(len(pts)), counts)
        d = pts[flat] - pts[owner]
        m_r = np.bincount(owner, d[:, 0], len(pts)) / counts
        m_c = np.bincount(owner, d[:, 1], len(pts)) / counts
        cov_rr = np.bincount(owner, d[:, 0] ** 2, len(pts)) / counts - m_r**2
        cov_cc = np.bincount(owner, d[:, 1] ** 2, len(pts)) / counts - m_c**2
        cov_rc = np.bincount(owner, d[:, 0] * d[:, 1], len(pts)) / counts - m_r * m_c
        theta = 0.5 * np.arctan2(2.0 * cov_rc, cov_rr - cov_cc)  # tangent angle in (row, col)
        alone = counts < 2
        out[idx, 0] = np.where(alone, 1.0, -np.sin(theta))
        out[idx, 1] = np.where(alone, 0.0, np.cos(theta))
    return out


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


def aggregate_crack_width(
    width_px: ArrayLike,
    width_sd_px: ArrayLike,
    below_limit: ArrayLike,
    *,
    depth_rel_sd: ArrayLike | None = None,
    limit_px: ArrayLike | None = None,
    min_samples: int = 3,
) -> CrackWidth:
    """Summarise one crack's sample widths: mean with uncertainty, p95, max, fraction below.

    Samples below the limit or not measured stay out of the statistics (those below the limit
    count in ``fraction_below_limit``). The mean's uncertainty combines the samples' standard
    error with the crack's depth uncertainty, which all its samples share and which does not
    average down (``mean * depth_rel_sd``). ``p95`` and ``max`` are of the reported widths, so
    they carry the per-sample noise.

    Parameters
    ----------
    width_px, width_sd_px : ndarray of shape (n,), float, pixels
        From :class:`WidthMeasurement` (NaN where not a number).
    below_limit : ndarray of shape (n,), bool
    depth_rel_sd : ndarray of shape (n,), float, optional
        :attr:`WidthMeasurement.depth_rel_sd`; its median is used.
    limit_px : ndarray of shape (n,), float, pixels, optional
        Per-sample limit; the summary reports its median.
    min_samples : int
        Fewest samples above the limit for a number.

    Returns
    -------
    CrackWidth

    Examples
    --------
    >>> cw = aggregate_crack_width([2.0, 2.2, np.nan, 1.8], [0.2, 0.2, np.nan, 0.2],
    ...                            [False, False, True, False])
    >>> round(cw.mean_px, 2), round(cw.fraction_below_limit, 2)
    (2.0, 0.25)
    """
    w = np.asarray(width_px, dtype=np.float64).ravel()
    below = np.asarray(below_limit, dtype=bool).ravel()
    ok = np.isfinite(w) & ~below
    seen = ok | below
    frac = float(below.sum() / seen.sum()) if seen.any() else float("nan")
    lim = _nanmedian_or_nan(limit_px)
    nan = float("nan")
    if ok.sum() < min_samples:
        return CrackWidth(nan, nan, nan, nan, frac, int(ok.sum()), lim)
    wv = w[ok]
    mean = float(wv.mean())
    se = float(wv.std(ddof=1) / math.sqrt(wv.size))
    rel = _nanmedian_or_nan(depth_rel_sd)
    shared = mean * rel if np.isfinite(rel) else 0.0
    return CrackWidth(
        mean_px=mean,
        mean_sd_px=math.hypot(se, shared),
        p95_px=float(np.percentile(wv, 95)),
        max_px=float(wv.max()),
        fraction_below_limit=frac,
        n_samples=int(wv.size),
        limit_px=lim,
    )


def _nanmedian_or_nan(values: ArrayLike | None) -> float:
    if values is None:
        return float("nan")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


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
    search_px: float = 2.5,
    pool_radius_px: float = 4.0,
    direction_radius_px: float = 5.0,
) -> WidthMeasurement:
    """Measure crack width from the image's intensity profiles at samples along the crack.

    At each sample the dark band is located on the normal within ``search_px`` of the sample;
    the profile is the pixels of a short strip across the band, each at its exact offset from
    the band's centre (no interpolation); the wall under the band comes from a grey closing
    levelled on the band's two sides; the darkness profile is fitted with the band model. The
    depth ``k`` and PSF ``sigma`` are shared per ``labels`` group (a crack) and found by a
    joint robust fit of its profiles; every width is then fitted with them, and finally
    replaced by the weighted median of the widths within ``pool_radius_px`` on the same crack
    (weights: inverse variance, inflated by each profile's misfit). See the module docstring.

    Parameters
    ----------
    grey : ndarray of shape (H, W), float or int
        Image brightness, one band (e.g. the mean of R, G and B). NaN is nodata.
    rows, cols : ndarray of shape (n,), float or int, pixels
        Sample positions on the crack (e.g. skeleton pixels), within ``search_px`` of its
        centreline.
    normals : ndarray of shape (n, 2), float, optional
        Unit normals ``(row, col)``. None: from the samples (:func:`profile_normals`).
    labels : ndarray of shape (n,), int, optional
        Crack of each sample (e.g. the skeleton's connected components): depth and blur are
        shared within a crack, widths are smoothed within a crack. None: one crack.
    psf_sigma_px : float, optional
        PSF sigma (pixels, without the pixel aperture) if known; None: estimated per crack.
    max_width_px : float
        Widest crack measured (pixels); wider dark bands are not measured.
    min_width_px : float
        Floor of the measurable limit (pixels), see :func:`measurable_limit_px`.
    limit_z : float
        Multiple of the noise-only width uncertainty that sets the limit.
    search_px : float
        How far from the sample (pixels, along the normal) the band's centre may lie.
    pool_radius_px : float
        Radius (pixels) of the robust smoothing along the crack; 0 keeps each sample's fit.
    direction_radius_px : float
        Neighbourhood radius (pixels) for normals computed here.

    Returns
    -------
    WidthMeasurement
        Per-sample widths, uncertainties and flags, in the order of ``rows``/``cols``.
    """
    img = np.asarray(grey, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"grey has shape {img.shape}; expected (rows, cols). Pass one band.")
    r0 = np.asarray(rows, dtype=np.float64).ravel()
    c0 = np.asarray(cols, dtype=np.float64).ravel()
    if r0.shape != c0.shape:
        raise ValueError(f"rows has {r0.size} values but cols has {c0.size}; they must align.")
    n = r0.size
    lab = np.zeros(n, np.int64) if labels is None else np.asarray(labels).ravel()
    if lab.size != n:
        raise ValueError(f"labels has {lab.size} values for {n} samples; they must align.")
    if normals is None:
        nrm = profile_normals(r0, c0, labels=lab, radius_px=direction_radius_px)
    else:
        nrm = np.asarray(normals, dtype=np.float64).reshape(n, 2)
        nrm = nrm / np.maximum(np.hypot(nrm[:, 0], nrm[:, 1]), 1e-12)[:, None]

    nan = np.full(n, np.nan)
    out = dict(
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
        normal_rc=nrm,
    )
    bad_px = ~np.isfinite(img)
    if n == 0 or bad_px.all():
        return WidthMeasurement(**out)
    bad = None
    if bad_px.any():
        # Fill nodata with the nearest valid value for the spline; samples near it are dropped.
        _, (near_r, near_c) = ndimage.distance_transform_edt(bad_px, return_indices=True)
        img = img[near_r, near_c]
        bad = ndimage.binary_dilation(bad_px, iterations=2).astype(np.float32)

    sig_guess = 1.2 if psf_sigma_px is None else float(psf_sigma_px)
    prof = _take_profiles(
        img,
        bad,
        r0,
        c0,
        nrm,
        sig_guess=sig_guess,
        max_width_px=max_width_px,
        search_px=search_px,
    )
    ok = prof.ok
    if not ok.any():
        logger.debug("width: none of %d samples gave a usable profile", n)
        return WidthMeasurement(**out)
    idx = np.nonzero(ok)[0]
    theta4, _, _ = prof.fit(prof.theta0, (K, W, C, S), idx)
    depth, depth_rel, sigma = _joint_depth_blur(prof, theta4, lab, ok, psf_sigma_px=psf_sigma_px)
    theta = theta4.copy()
    theta[:, K] = depth
    theta[:, S] = sigma
    theta2, cov2, sse2 = prof.fit(theta, (W, C), idx)
    w_fit = np.where(ok, theta2[:, W], np.nan)
    # A profile the model does not fit (a texture edge, a crossing joint) is less trustworthy
    # than its noise says: its variance is scaled by its normalised misfit.
    misfit = np.maximum(prof.misfit(sse2), 1.0)
    var_fit = np.where(ok, prof.s2 * cov2[:, W, W] * misfit, np.nan)
    if pool_radius_px > 0:
        w_rep, var_rep = _smooth_along_crack(r0, c0, lab, ok, w_fit, var_fit, pool_radius_px)
    else:
        w_rep, var_rep = w_fit, var_fit
    limit = measurable_limit_px(
        prof.noise, depth, sigma, min_width_px=min_width_px, limit_z=limit_z
    )
    below = ok & (w_rep < limit)
    out.update(
        width_px=np.where(ok & ~below, w_rep, np.nan),
        width_sd_px=np.where(ok, np.sqrt(var_rep + (w_rep * depth_rel) ** 2), np.nan),
        below_limit=below,
        limit_px=np.where(ok, limit, np.nan),
        measured=ok,
        fitted_width_px=w_fit,
        centre_offset_px=np.where(ok, theta2[:, C] + prof.centre, np.nan),
        depth=depth,
        depth_rel_sd=depth_rel,
        psf_sigma_px=sigma,
    )
    return WidthMeasurement(**out)


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Profiles:
    """Fine darkness profiles of the usable samples, in classes of equal length."""

    n: int
    classes: list[dict[str, NDArray]]
    ok: NDArray[np.bool_]
    centre: NDArray[np.float64]
    noise: NDArray[np.float64]
    s2: NDArray[np.float64]
    n_pts: NDArray[np.float64]
    length_px: NDArray[np.float64]
    theta0: NDArray[np.float64]

    def fit(
        self,
        theta0: NDArray[np.float64],
        free: tuple[int, ...],
        idx: NDArray[np.intp],
        *,
        n_iter: int = 40,
        with_cov: bool = True,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Fit the ``free`` parameters of the profiles ``idx`` (others keep ``theta0``)."""
        theta = theta0.copy()
        cov = np.zeros((self.n, 4, 4))
        sse = np.zeros(self.n)
        want = np.zeros(self.n, bool)
        want[idx] = True
        fixed = [p for p in range(4) if p not in free]
        for cl in self.classes:
            sel = want[cl["idx"]]
            if not sel.any():
                continue
            i = cl["idx"][sel]
            lower = cl["lower"][sel].copy()
            upper = cl["upper"][sel].copy()
            lower[:, fixed] = theta0[i][:, fixed]
            upper[:, fixed] = theta0[i][:, fixed]
            theta[i], cov[i], sse[i] = fit_band_profiles(
                cl["darkness"][sel],
                cl["s"][sel],
                cl["weight"][sel],
                theta0[i],
                free,
                lower,
                upper,
                n_iter=n_iter,
                with_cov=with_cov,
            )
        return theta, cov, sse

    def misfit(self, sse: NDArray[np.float64]) -> NDArray[np.float64]:
        """Normalised misfit of each profile: about 1 for residuals at the noise level."""
        with np.errstate(all="ignore"):
            return sse / (self.noise**2 * self.n_pts)


def _band_from_sides(
    coeffs: NDArray[np.float64],
    bad: NDArray[np.float32] | None,
    r0: NDArray[np.float64],
    c0: NDArray[np.float64],
    nrm: NDArray[np.float64],
    *,
    tail_px: float,
    max_width_px: float,
    search_px: float,
    n_iter: int = 4,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Centre and half-width (pixels) of the dark band on each normal, and whether one is found.

    On a coarse profile (step 0.5 px), from a starting half-width ``h0``, repeat: the wall is
    the line through the medians of the profile over ``_WALL_PX`` beyond the band's blurred
    tails on each side, the darkness is ``1 - profile / wall``, and the band runs from its
    darkest point near the sample out to half that darkness. A sample inside a wide band sees
    no band from a small start (its walls are inside the band too), so starts from one pixel
    up to ``max_width_px / 2`` are tried; the smallest whose band stands out of the noise
    (peak darkness over three times the profile's noise and over 0.03) with both walls brighter
    than it wins (a larger start could lock onto a dark texture patch, e.g. a brick, around a
    thin crack); when none does, the smallest band found is kept (a faint crack), unless the
    sample is clearly darker than the wall ``max_width_px`` away on both sides (inside a band
    too wide to measure: not found).
    """
    step = 0.5
    reach = max_width_px + tail_px + _WALL_PX + 2.0
    s = np.arange(-reach, reach + step / 2, step)
    rr = r0[:, None] + nrm[:, 0, None] * s
    cc = c0[:, None] + nrm[:, 1, None] * s
    p, valid = _sample(coeffs, bad, rr, cc)
    p_smooth = ndimage.uniform_filter1d(np.where(valid, p, 0.0), 3, axis=1, mode="nearest")
    n, m = p.shape
    mid = m // 2
    rows = np.arange(n)
    k_reach = min(int(round(search_px / step)), mid)
    near_mid = np.where(valid, p_smooth, np.inf)[:, mid - k_reach : mid + k_reach + 1]
    start = s[np.argmin(near_mid, axis=1) + mid - k_reach]
    sv = np.broadcast_to(s, p.shape)
    cols = np.arange(m)[None, :]
    starts = [h for h in (0.5, 1.5, 3.0, 6.0, 10.0, 15.0, 20.0, 30.0) if h <= max_width_px / 2]
    results = []
    for h0 in starts:
        centre = start.copy()
        half = np.full(n, h0)
        found = np.zeros(n, bool)
        pk = np.zeros(n)
        for _ in range(n_iter):
            edge = (half + tail_px)[:, None]
            rel = sv - centre[:, None]
            left = valid & (rel < -edge) & (rel >= -edge - _WALL_PX)
            right = valid & (rel > edge) & (rel <= edge + _WALL_PX)
            level, slope = _wall_line(p, sv, left, right)
            wall = level[:, None] + slope[:, None] * sv
            with np.errstate(all="ignore"):
                dark = np.where(valid & (wall > 0), 1.0 - p_smooth / wall, 0.0)
            near = np.abs(rel) <= (half + 1.0)[:, None]
            i_pk = np.argmax(np.where(near, dark, -np.inf), axis=1)
            pk = dark[rows, i_pk]
            below = dark < 0.5 * pk[:, None]
            i_hi = np.where(below & (cols > i_pk[:, None]), cols, m).min(axis=1)
            i_lo = np.where(below & (cols < i_pk[:, None]), cols, -1).max(axis=1)
            e_lo = s[np.clip(i_lo, 0, m - 1)] + step / 2
            e_hi = s[np.clip(i_hi, 0, m - 1)] - step / 2
            new_c = 0.5 * (e_lo + e_hi)
            new_h = np.clip(0.5 * (e_hi - e_lo), 0.25, max_width_px)
            found = (i_lo >= 0) & (i_hi < m) & (pk > 0) & np.isfinite(level)
            found &= np.abs(new_c) <= search_px + new_h
            centre = np.where(found, new_c, centre)
            half = np.where(found, new_h, half)
        # From a wide start, both walls must be brighter than the band: a start inside a wide
        # band can converge on its edge, with one "wall" inside the band. (Not asked of the
        # one-pixel start: a thin crack on texture often has a darker patch on one side.)
        rel = sv - centre[:, None]
        edge = (half + tail_px)[:, None]
        m_l = _masked_median(p, valid & (rel < -edge) & (rel >= -edge - _WALL_PX))
        m_r = _masked_median(p, valid & (rel > edge) & (rel <= edge + _WALL_PX))
        inner = _masked_median(p, valid & (np.abs(rel) <= np.maximum(0.5 * half, 0.5)[:, None]))
        with np.errstate(all="ignore"):
            lift = (np.fmin(m_l, m_r) - inner) / np.fmax(m_l, m_r)
        if h0 > 1.0:
            found &= ~(np.isfinite(lift) & (lift < 0.4 * pk))
        results.append((centre, half, found, np.where(found, pk, 0.0)))
    pks = np.array([r[3] for r in results])  # (n_starts, n)
    # Noise of the darkness from the profile's pixel-to-pixel differences (robust).
    pixels = p[:, ::2]  # one value per pixel of offset
    pair_ok = valid[:, ::2][:, 1:] & valid[:, ::2][:, :-1]
    diffs = np.abs(np.diff(pixels, axis=1))
    with np.errstate(all="ignore"):
        nz = 1.4826 * _masked_median(diffs, pair_ok) / math.sqrt(2.0) / _masked_median(p, valid)
    nz = np.where(np.isfinite(nz), nz, 0.0)
    found_any = np.array([r[2] for r in results])
    good = found_any & (pks >= np.maximum(_SIGNIFICANT * nz, 0.03)[None, :])
    # No start stands out: keep the smallest band found (a faint crack, fitted and flagged).
    choice = np.where(good.any(0), np.argmax(good, axis=0), np.argmax(found_any, axis=0))
    centre = np.array([r[0] for r in results])[choice, rows]
    half = np.array([r[1] for r in results])[choice, rows]
    found = found_any[choice, rows]
    # No band stands out, yet the sample is clearly darker than the wall a whole max_width_px
    # away on both sides: it lies inside a band too wide to measure.
    far = np.abs(sv) >= reach - _WALL_PX
    far_l = _masked_median(p, far & valid & (sv < 0))
    far_r = _masked_median(p, far & valid & (sv > 0))
    with np.errstate(all="ignore"):
        dark_far = 1.0 - p_smooth[rows, mid] / np.fmin(far_l, far_r)
    pk = pks[choice, rows]
    too_wide = (
        ~good.any(0)
        & np.isfinite(dark_far)
        & (dark_far > np.maximum(_SIGNIFICANT * nz, 0.05))
        & (dark_far > 2.0 * pk)
    )
    found &= ~too_wide
    pk = pks[choice, rows]
    across = np.abs(sv - centre[:, None]) <= half[:, None]
    found &= ~(across & ~valid).any(axis=1) & valid[:, mid] & (2.0 * half <= max_width_px)
    return centre, half, found


def _wall_line(
    values: NDArray[np.float64],
    s: NDArray[np.float64],
    left: NDArray[np.bool_],
    right: NDArray[np.bool_],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Line (level at s = 0, slope) through the medians of ``values`` on the two sides.

    One side missing (image border, nodata): a constant at the other side's median.
    """
    m_l, m_r = _masked_median(values, left), _masked_median(values, right)
    s_l, s_r = _masked_mean(s, left), _masked_mean(s, right)
    both = np.isfinite(m_l) & np.isfinite(m_r)
    with np.errstate(all="ignore"):
        slope = np.where(both, (m_r - m_l) / np.where(both, s_r - s_l, 1.0), 0.0)
    level = np.where(
        both, 0.5 * (m_l + m_r) - slope * 0.5 * (s_l + s_r), np.where(np.isfinite(m_l), m_l, m_r)
    )
    return level, slope


def _take_profiles(
    img: NDArray[np.float64],
    bad: NDArray[np.float32] | None,
    r0: NDArray[np.float64],
    c0: NDArray[np.float64],
    nrm: NDArray[np.float64],
    *,
    sig_guess: float,
    max_width_px: float,
    search_px: float,
) -> _Profiles:
    """Locate the band on each normal and take its darkness profile from a strip of pixels.

    The wall under the band is the grey closing of the lightly smoothed image with the
    smallest square of a ladder whose half-size covers the band's half-width, two PSF sigmas
    and ``_FILL_MARGIN_PX`` (a larger square bridges texture, e.g. a brick between joints,
    and makes the wall look dark), levelled by a line through the medians of
    ``image / closing`` over ``_WALL_PX`` beyond the band's tails on each side. The profile
    spans the band, its tails (``3 sigma + 1`` px) and that wall stretch.
    """
    n = r0.size
    coeffs = ndimage.spline_filter(img, order=3, mode="nearest")
    tail = 3.0 * max(sig_guess, 0.8) + 1.0
    fill = 2.0 * max(sig_guess, 0.8) + _FILL_MARGIN_PX
    centre, half, has = _band_from_sides(
        coeffs, bad, r0, c0, nrm, tail_px=tail, max_width_px=max_width_px, search_px=search_px
    )
    radii = np.ceil(half + fill).astype(np.int64)
    smooth = ndimage.gaussian_filter(img, 0.7, mode="nearest")

    ok = np.zeros(n, bool)
    noise = np.full(n, np.nan)
    n_pix = np.full(n, np.nan)
    theta0 = np.zeros((n, 4))
    classes: list[dict[str, NDArray]] = []
    # Radii grow by ~15 % per class: one closing per class, a close-enough square for each.
    ladder = [2]
    while ladder[-1] < radii.max(initial=2):
        ladder.append(max(ladder[-1] + 1, int(math.ceil(ladder[-1] * 1.15))))
    pick = np.searchsorted(np.asarray(ladder), radii)
    for j in np.unique(pick[has]):
        idx = np.nonzero(has & (pick == j))[0]
        closing = ndimage.grey_closing(smooth, size=(2 * ladder[j] + 1,) * 2, mode="reflect")
        h_in = half[idx] + tail
        h_out = h_in + _WALL_PX
        s, p, wall, valid = _strip_pixels(
            img, closing, bad, r0[idx], c0[idx], nrm[idx], centre[idx], h_out
        )
        with np.errstate(all="ignore"):
            q = np.where(valid & (wall > 0), p / wall, np.nan)
        a = np.abs(s)
        in_win = valid & np.isfinite(q)
        is_wall = in_win & (a > h_in[:, None])
        level, slope = _wall_line(q, s, is_wall & (s < 0), is_wall & (s > 0))
        with np.errstate(all="ignore"):
            darkness = 1.0 - q / (level[:, None] + slope[:, None] * s)
        good = np.isfinite(level) & (level > 0)
        inner = (a <= h_in[:, None]) & in_win
        good &= inner.sum(1) >= _DENSITY * (2.0 * half[idx] + 2.0)
        weight = (in_win & good[:, None]).astype(np.float64)
        darkness = np.where(weight > 0, darkness, 0.0)
        # Noise of the darkness: robust spread on the wall stretches.
        wall_res = np.where(is_wall, darkness, np.nan)
        centred = np.abs(wall_res - _masked_median(wall_res, is_wall)[:, None])
        nz = 1.4826 * _masked_median(centred, is_wall)
        nz = np.where(np.isfinite(nz), np.maximum(nz, 1e-3), 1e-2)
        # Start values from the moments of the inner darkness (pixels sorted by offset).
        din = np.where(inner, darkness, 0.0)
        area = din.sum(1) / _DENSITY
        peak = ndimage.uniform_filter1d(din, int(_DENSITY), axis=1).max(1)
        k0 = np.clip(peak, 0.02, 1.0)
        cen0 = np.where(area > 0, (din * s).sum(1) / _DENSITY / np.maximum(area, 1e-9), 0.0)
        theta0[idx] = np.column_stack(
            [
                k0,
                np.clip(area / k0, 0.2, 2 * h_in),
                np.clip(cen0, -h_in, h_in),
                np.full(idx.size, max(sig_guess, 0.8) * 0.75),
            ]
        )
        lower = np.column_stack(
            [np.full(idx.size, 1e-3), np.full(idx.size, 0.02), -h_in, np.full(idx.size, 0.2)]
        )
        upper = np.column_stack(
            [np.full(idx.size, 1.0), 2.0 * h_in + 1.0, h_in, np.full(idx.size, 3.0)]
        )
        ok[idx] = good
        noise[idx] = nz
        n_pix[idx] = np.maximum(weight.sum(1), 1.0)
        classes.append(
            dict(idx=idx, s=s, darkness=darkness, weight=weight, lower=lower, upper=upper)
        )
    # Pixels are independent samples: the parameters' variance scale is the noise variance.
    return _Profiles(
        n=n,
        classes=classes,
        ok=ok,
        centre=centre,
        noise=noise,
        s2=noise**2,
        n_pts=n_pix,
        length_px=n_pix / _DENSITY,
        theta0=theta0,
    )


def _strip_pixels(
    img: NDArray[np.float64],
    closing: NDArray[np.float64],
    bad: NDArray[np.float32] | None,
    r0: NDArray[np.float64],
    c0: NDArray[np.float64],
    nrm: NDArray[np.float64],
    centre: NDArray[np.float64],
    h_out: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """The pixels of a strip across the crack at each sample, sorted by offset along the normal.

    The strip is ``2 * _STRIP_PX`` long along the crack and ``2 * h_out`` across, centred at
    the band's centre. Each pixel keeps its own value and its exact offset from the band's
    centre: no interpolation, so the model (band, pixel aperture, Gaussian) is evaluated at
    the pixel centres exactly (the slanted-edge idea: a strip across an oblique band samples
    the profile at many sub-pixel offsets).

    Returns offsets ``s`` (n, K), pixel values, closing values and validity, padded with
    invalid entries; ``K`` is the most pixels of any strip.
    """
    h, w = img.shape
    n = r0.size
    reach = int(math.ceil(h_out.max() + _STRIP_PX)) + 1
    d = np.arange(-reach, reach + 1)
    dr, dc = (g.ravel() for g in np.meshgrid(d, d, indexing="ij"))
    base_r, base_c = np.round(r0).astype(np.int64), np.round(c0).astype(np.int64)
    pr = base_r[:, None] + dr[None, :]
    pc = base_c[:, None] + dc[None, :]
    rel_r = pr - r0[:, None]
    rel_c = pc - c0[:, None]
    u = rel_r * nrm[:, 0, None] + rel_c * nrm[:, 1, None] - centre[:, None]
    v = -rel_r * nrm[:, 1, None] + rel_c * nrm[:, 0, None]
    keep = (np.abs(u) <= h_out[:, None]) & (np.abs(v) <= _STRIP_PX)
    keep &= (pr >= 0) & (pr < h) & (pc >= 0) & (pc < w)
    k_max = int(keep.sum(1).max(initial=1))
    order = np.argsort(np.where(keep, u, np.inf), axis=1, kind="stable")[:, :k_max]
    rows = np.arange(n)[:, None]
    s = u[rows, order]
    valid = keep[rows, order]
    pr_k = np.clip(pr[rows, order], 0, h - 1)
    pc_k = np.clip(pc[rows, order], 0, w - 1)
    if bad is not None:
        valid &= bad[pr_k, pc_k] <= 0.0
    s = np.where(valid, s, 0.0)
    return s, img[pr_k, pc_k], closing[pr_k, pc_k], valid


def _sample(
    coeffs: NDArray[np.float64],
    bad: NDArray[np.float32] | None,
    r: NDArray[np.float64],
    c: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Cubic-spline samples at ``(r, c)``, and whether each is usable (inside, off nodata)."""
    h, w = coeffs.shape
    ok = (r >= 0) & (r <= h - 1) & (c >= 0) & (c <= w - 1)
    coords = [r.ravel(), c.ravel()]
    vals = ndimage.map_coordinates(coeffs, coords, order=3, mode="nearest", prefilter=False)
    if bad is not None:
        near_bad = ndimage.map_coordinates(bad, coords, order=1, mode="nearest", prefilter=False)
        ok &= near_bad.reshape(r.shape) <= 0.0
    return vals.reshape(r.shape), ok


def _masked_median(values: NDArray[np.float64], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Row-wise median of ``values`` where ``mask`` (NaN for an empty row)."""
    out = np.full(values.shape[0], np.nan)
    has = mask.any(1)
    if has.any():
        out[has] = np.nanmedian(np.where(mask[has], values[has], np.nan), axis=1)
    return out


def _masked_mean(values: NDArray[np.float64], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Row-wise mean of ``values`` where ``mask`` (NaN for an empty row)."""
    cnt = mask.sum(1)
    with np.errstate(all="ignore"):
        return np.where(cnt > 0, (values * mask).sum(1) / np.maximum(cnt, 1), np.nan)


# --------------------------------------------------------------------------------------------
# Depth and blur per crack; smoothing along the crack
# --------------------------------------------------------------------------------------------
def _joint_depth_blur(
    prof: _Profiles,
    theta4: NDArray[np.float64],
    lab: NDArray,
    ok: NDArray[np.bool_],
    *,
    psf_sigma_px: float | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Depth ``k`` and PSF ``sigma`` of each crack from a joint, robust fit of its profiles.

    For each ``k`` of a coarse grid, then of finer ones around the minimum (recentred while
    the minimum sits on their edge), and a few ``sigma`` around the one the profiles' spread
    implies for that ``k``, every profile's width and centre are fitted. A crack's cost is the mean over its profiles
    of a Cauchy function of the normalised misfit (noise plus a model-error floor of
    ``_MODEL_ERROR`` times the profile's peak darkness), times ``min(n, _N_EFF)``, plus the
    weak priors. The relative uncertainty of ``k`` is the half-range of ``log k`` where the
    cost profile stays within one typical profile's cost of its minimum.

    Returns per-sample arrays (NaN where not ok): depth, its relative uncertainty, sigma.
    """
    n = prof.n
    idx_all = np.nonzero(ok)[0]
    keep = np.zeros(n, bool)
    for g in np.unique(lab[idx_all]):
        members = idx_all[lab[idx_all] == g]
        pick = np.linspace(0, members.size - 1, min(members.size, _MAX_JOINT)).astype(int)
        keep[members[np.unique(pick)]] = True
    idx = np.nonzero(keep)[0]
    peak = theta4[:, K] * np.abs(
        erf(theta4[:, W] / (2.0 * math.sqrt(2.0) * np.maximum(theta4[:, S], 0.3)))
    )
    expected_sse = (prof.noise**2 + (_MODEL_ERROR * peak) ** 2) * prof.n_pts
    area = theta4[:, K] * theta4[:, W]
    groups, gi = np.unique(lab[idx], return_inverse=True)
    n_g = groups.size
    n_s = np.bincount(gi, minlength=n_g).astype(np.float64)
    weight = np.minimum(n_s, _N_EFF) / n_s
    logit0 = math.log(_PRIOR_K / (1.0 - _PRIOR_K))

    def cost(k_g: NDArray[np.float64], s_g: NDArray[np.float64]) -> NDArray[np.float64]:
        th = theta4.copy()
        th[idx, K] = k_g[gi]
        th[idx, S] = s_g[gi]
        th[idx, W] = area[idx] / k_g[gi]  # the darkness area holds whatever k: a close start
        _, _, sse = prof.fit(th, (W, C), idx, n_iter=10, with_cov=False)
        # Cauchy cost in units of independent pixels: about the profile's length when it fits.
        x = sse[idx] / expected_sse[idx]
        per = prof.length_px[idx] * 4.0 * np.log1p(x / 4.0)
        total = np.bincount(gi, per, n_g) * weight
        kk = np.minimum(k_g, 0.999)
        prior = ((np.log(kk / (1.0 - kk)) - logit0) / _PRIOR_K_SD) ** 2
        if psf_sigma_px is None:
            prior = prior + (np.log(s_g / _PRIOR_S) / _PRIOR_S_SD) ** 2
        return total + prior

    # For a given k the blur is nearly fixed by the profiles' spread: a band of width A / k
    # blurred by sigma (and the aperture) has variance (A/k)^2 / 12 + sigma^2 + 1/12. The
    # low-cost set is a narrow curved valley in (k, sigma), so sigma is searched around that
    # value for each k rather than on a fixed grid.
    spread = theta4[:, W] ** 2 / 12.0 + theta4[:, S] ** 2

    def sigma_for(k_g: NDArray[np.float64]) -> NDArray[np.float64]:
        if psf_sigma_px is not None:
            return np.full(n_g, float(psf_sigma_px))
        s2_i = spread[idx] - (area[idx] / k_g[gi]) ** 2 / 12.0
        med = np.array([np.median(s2_i[gi == g]) for g in range(n_g)])
        return np.sqrt(np.clip(med, 0.2**2, 3.0**2))

    s_offsets = np.array([0.0]) if psf_sigma_px is not None else _S_OFFSETS

    def best_over_sigma(k_g):
        centre_s = sigma_for(k_g)
        c = np.array([cost(k_g, centre_s * math.exp(d)) for d in s_offsets])  # (ns, n_g)
        j = c.argmin(0)
        return c[j, np.arange(n_g)], centre_s * np.exp(s_offsets[j])

    evaluated_k: list[NDArray[np.float64]] = []
    evaluated_cost: list[NDArray[np.float64]] = []
    best_cost = np.full(n_g, np.inf)
    k_g, s_g = np.full(n_g, _PRIOR_K), sigma_for(np.full(n_g, _PRIOR_K))

    def consider(k_try):
        nonlocal k_g, s_g, best_cost
        c, s_try = best_over_sigma(k_try)
        evaluated_k.append(k_try)
        evaluated_cost.append(c)
        better = c < best_cost
        best_cost = np.where(better, c, best_cost)
        k_g, s_g = np.where(better, k_try, k_g), np.where(better, s_try, s_g)
        return c

    for k in _K_GRID:
        consider(np.full(n_g, k))
    for _ in range(3):  # refine k around the minimum, recentring while it sits on the edge
        k_centre = k_g.copy()
        sweep = np.array([consider(np.minimum(k_centre * mk, 1.0)) for mk in _K_FINE])
        j = sweep.argmin(0)
        if not ((j == 0) | (j == _K_FINE.size - 1)).any():
            break
    # Last, the vertex of the parabola through the best fine step and its neighbours (log k).
    j = np.clip(sweep.argmin(0), 1, _K_FINE.size - 2)
    cols = np.arange(n_g)
    c0_, c1_, c2_ = sweep[j - 1, cols], sweep[j, cols], sweep[j + 1, cols]
    step = np.log(_K_FINE[1] / _K_FINE[0])
    curv = c0_ - 2.0 * c1_ + c2_
    with np.errstate(all="ignore"):
        shift = np.where(curv > 0, 0.5 * step * (c0_ - c2_) / curv, 0.0)
    k_vertex = np.minimum(k_centre * _K_FINE[j] * np.exp(np.clip(shift, -step, step)), 1.0)
    consider(k_vertex)
    prof_k = np.array(evaluated_cost)  # (n_evaluated, n_g)
    log_k = np.log(np.array(evaluated_k))
    # Relative uncertainty of k: where the cost profile (min over sigma) stays within one unit.
    f_min = prof_k.min(0)
    # One unit: a typical profile's cost at the optimum (the crack's evidence about k is
    # limited by the model's systematic error, about one profile's worth).
    unit = np.maximum(f_min / np.minimum(n_s, _N_EFF), 1.0)
    inside = prof_k <= f_min + unit
    lo = np.where(inside, log_k, np.inf).min(0)
    hi = np.where(inside, log_k, -np.inf).max(0)
    k_rel = np.maximum(0.5 * (hi - lo), 0.02)
    # A crack whose profiles leave its depth this uncertain, and whose band (fitted freely) is
    # narrower than a blurred line can look, is narrower than its blur everywhere: only its
    # profiles' fine shape, which JPEG ringing and sharpening distort, would decide. Its depth is then the prior's, raised to the darkest peak seen (blur only
    # lowers a peak), with the prior's spread as its uncertainty.
    free_w = np.array([np.median(theta4[idx, W][gi == g]) for g in range(n_g)])
    unresolved = (k_rel > _K_REL_MAX) & (free_w < _RESOLVED_PX)
    if unresolved.any():
        peak_g = np.array([np.median(peak[idx][gi == g]) for g in range(n_g)])
        k_g = np.where(unresolved, np.clip(np.maximum(_PRIOR_K, peak_g), 0.0, 1.0), k_g)
        s_g = np.where(unresolved, sigma_for(k_g), s_g)
        k_rel = np.where(unresolved, np.maximum(k_rel, _PRIOR_K_REL), k_rel)
    for g in range(n_g):
        logger.debug(
            "width crack %s: %d profiles, depth %.3f (x/ %.2f), sigma %.2f px",
            groups[g],
            int(n_s[g]),
            k_g[g],
            math.exp(k_rel[g]),
            s_g[g],
        )
    where = np.searchsorted(groups, lab[idx_all])
    k_out, r_out, s_out = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    k_out[idx_all] = k_g[where]
    r_out[idx_all] = k_rel[where]
    s_out[idx_all] = s_g[where]
    return k_out, r_out, s_out


def _smooth_along_crack(
    r0: NDArray[np.float64],
    c0: NDArray[np.float64],
    lab: NDArray,
    ok: NDArray[np.bool_],
    width: NDArray[np.float64],
    var: NDArray[np.float64],
    radius_px: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Weighted median of the widths within ``radius_px`` on the same crack, and its variance."""
    out_w = width.copy()
    out_v = var.copy()
    for g in np.unique(lab[ok]):
        idx = np.nonzero(ok & (lab == g))[0]
        pts = np.column_stack([r0[idx], c0[idx]])
        for a, nb in zip(idx, cKDTree(pts).query_ball_point(pts, radius_px)):
            est, se = pool_robust(width[idx[nb]], var[idx[nb]])
            if np.isfinite(est):
                out_w[a] = est
                out_v[a] = se**2
    return out_w, out_v
