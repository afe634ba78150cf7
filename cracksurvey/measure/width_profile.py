"""Crack width measured from the image: intensity profiles across the crack at skeleton samples.

Model. Across a crack, the image is the wall's brightness ``B(s)`` (locally a linear trend)
darkened by a band of width ``w`` and relative depth ``k`` (the crack is a shadow: inside it
the wall keeps ``1 - k`` of its brightness), seen through a Gaussian PSF of standard deviation
``sigma`` (lens blur, the pixel's own aperture and the interpolation together)::

    I(s) = B(s) * (1 - k * [Phi((s - c + w/2) / sigma) - Phi((s - c - w/2) / sigma)])

with ``s`` the offset along the normal (pixels) and ``c`` the crack centre. The *darkness*
``D(s) = 1 - I(s) / B(s)`` integrates to ``k * w`` whatever the blur, so ``w = area / k``.

Identifiability. Where the crack is several ``sigma`` wide the profile reaches its floor and
``k``, ``w``, ``c`` and ``sigma`` are all seen. Where it is narrower than about ``2 sigma`` only
the darkness area ``k * w`` (and the blurred spread) is seen: a thin dark crack and a wider pale
one look alike. So ``sigma`` and ``k`` are pooled over the samples of one crack (a ``labels``
group), each sample weighted by how well its own profile determines them (the wide parts
dominate), and every sample's width is then fitted with the crack's ``k`` and ``sigma``. A crack
that is narrow everywhere has only weak evidence for its depth; its width uncertainty says so.

Measurable limit. A width under ``min_width_px`` (default one pixel: a sub-pixel crack is a
mixed pixel, seen only through its darkness area) or under ``limit_z`` times the noise-only
width uncertainty of its profile is reported as below the limit (``below_limit``), not as a
number. :func:`measurable_limit_px` gives that limit for given image conditions and
:func:`px_to_mm` converts with the ground sample distance.

Functions are pure: arrays in, arrays out. Pixel coordinates are ``(row, col)`` with pixel
centres at integers.
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

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# Parameter order in the profile fits.
_K, _W, _C, _S = 0, 1, 2, 3
import os
FINAL_FREE = (1,2,3) if os.environ.get('FF')=='3' else (1,2)
_BG = os.environ.get('BG', 'sides')


@dataclass(frozen=True, eq=False)
class WidthMeasurement:
    """Per-sample crack widths measured from the image.

    Attributes
    ----------
    width_px : ndarray of shape (n,), float64, pixels
        Crack width; NaN where the sample is below the measurable limit or not measured.
    width_sd_px : ndarray of shape (n,), float64, pixels
        Standard uncertainty of the width (noise, texture and the crack depth's uncertainty);
        NaN where not measured.
    below_limit : ndarray of shape (n,), bool
        The crack is visible in the profile but narrower than ``limit_px``.
    limit_px : ndarray of shape (n,), float64, pixels
        Measurable limit at the sample (see :func:`measurable_limit_px`).
    measured : ndarray of shape (n,), bool
        A profile could be taken and fitted (False at the image border, on nodata, where the
        dark band is wider than ``max_width_px``, or where no darker band is found).
    fitted_width_px : ndarray of shape (n,), float64, pixels
        The fitted width even where it is below the limit: a diagnostic, not a result.
    centre_offset_px : ndarray of shape (n,), float64, pixels
        Fitted crack centre relative to the sample, along the normal (sub-pixel centreline).
    depth : ndarray of shape (n,), float64
        Relative depth ``k`` of the crack used for the sample (its group's pooled value).
    psf_sigma_px : ndarray of shape (n,), float64, pixels
        Effective blur ``sigma`` used for the sample (its group's pooled value).
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
    psf_sigma_px: NDArray[np.float64]
    normal_rc: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.width_px.size)


@dataclass(frozen=True)
class CrackWidth:
    """Width summary of one crack (see :func:`aggregate_crack_width`). Pixels throughout.

    ``mean_px``, ``p95_px`` and ``max_px`` are NaN when fewer than ``min_samples`` samples are
    above the limit; ``fraction_below_limit`` then tells why.
    """

    mean_px: float
    mean_sd_px: float
    p95_px: float
    max_px: float
    fraction_below_limit: float
    n_samples: int
    limit_px: float


# --------------------------------------------------------------------------------------------
# Geometry: normals and profile sampling
# --------------------------------------------------------------------------------------------
def profile_normals(
    rows: ArrayLike,
    cols: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    radius_px: float = 5.0,
) -> NDArray[np.float64]:
    """Unit normals of a crack at its sample points, from the points' local principal axis.

    Parameters
    ----------
    rows, cols : ndarray of shape (n,), float or int, pixels
        Sample positions along the crack(s), e.g. skeleton pixels.
    labels : ndarray of shape (n,), int, optional
        Crack (group) of each sample; neighbours from other groups are ignored. None: one group.
    radius_px : float
        Neighbourhood radius (pixels) for the local direction.

    Returns
    -------
    normal_rc : ndarray of shape (n, 2), float64
        Unit normal ``(row, col)``; the sign is arbitrary. ``(1, 0)`` for an isolated point.
    """
    r = np.asarray(rows, dtype=np.float64).ravel()
    c = np.asarray(cols, dtype=np.float64).ravel()
    n = r.size
    out = np.zeros((n, 2))
    out[:, 0] = 1.0
    if n == 0:
        return out
    lab = np.zeros(n, np.int64) if labels is None else np.asarray(labels).ravel()
    for g in np.unique(lab):
        idx = np.nonzero(lab == g)[0]
        pts = np.column_stack([r[idx], c[idx]])
        tree = cKDTree(pts)
        pairs = tree.query_ball_point(pts, radius_px)
        counts = np.fromiter((len(p) for p in pairs), np.int64, len(pairs))
        flat = np.fromiter((j for p in pairs for j in p), np.int64, int(counts.sum()))
        owner = np.repeat(np.arange(len(pts)), counts)
        d = pts[flat] - pts[owner]
        s_rr = np.bincount(owner, d[:, 0] ** 2, len(pts))
        s_cc = np.bincount(owner, d[:, 1] ** 2, len(pts))
        s_rc = np.bincount(owner, d[:, 0] * d[:, 1], len(pts))
        m_r = np.bincount(owner, d[:, 0], len(pts)) / counts
        m_c = np.bincount(owner, d[:, 1], len(pts)) / counts
        cov_rr = s_rr / counts - m_r**2
        cov_cc = s_cc / counts - m_c**2
        cov_rc = s_rc / counts - m_r * m_c
        theta = 0.5 * np.arctan2(2.0 * cov_rc, cov_rr - cov_cc)  # tangent angle in (row, col)
        alone = counts < 2
        out[idx, 0] = np.where(alone, 1.0, -np.sin(theta))
        out[idx, 1] = np.where(alone, 0.0, np.cos(theta))
    return out


def _sample(
    coeffs: NDArray[np.float64],
    bad: NDArray[np.float32] | None,
    shape: tuple[int, int],
    r: NDArray[np.float64],
    c: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Cubic-spline samples of the image at ``(r, c)`` and whether each sample is usable.

    A sample is unusable outside the image or within reach of a nodata pixel.
    """
    h, w = shape
    ok = (r >= 0) & (r <= h - 1) & (c >= 0) & (c <= w - 1)
    vals = ndimage.map_coordinates(
        coeffs, [r.ravel(), c.ravel()], order=3, mode="nearest", prefilter=False
    ).reshape(r.shape)
    if bad is not None:
        near_bad = ndimage.map_coordinates(
            bad, [r.ravel(), c.ravel()], order=1, mode="nearest", prefilter=False
        ).reshape(r.shape)
        ok &= near_bad <= 0.0
    return vals, ok


# --------------------------------------------------------------------------------------------
# Profile model and batched Levenberg-Marquardt fit
# --------------------------------------------------------------------------------------------
def _model(
    theta: NDArray[np.float64], s: NDArray[np.float64], *, jacobian: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """Darkness model ``k * (Phi(a) - Phi(b))`` and its Jacobian in (k, w, c, sigma).

    ``theta`` is (n, 4), ``s`` is (n, m); returns (n, m) and (n, m, 4).
    """
    k, w, c, sig = (theta[:, i, None] for i in range(4))
    a = (s - c + 0.5 * w) / sig
    b = (s - c - 0.5 * w) / sig
    g = 0.5 * (erf(a / _SQRT2) - erf(b / _SQRT2))
    if not jacobian:
        return k * g, None
    pa = np.exp(-0.5 * a * a) * _INV_SQRT_2PI
    pb = np.exp(-0.5 * b * b) * _INV_SQRT_2PI
    jac = np.empty(s.shape + (4,))
    jac[..., _K] = g
    jac[..., _W] = k * 0.5 * (pa + pb) / sig
    jac[..., _C] = -k * (pa - pb) / sig
    jac[..., _S] = -k * (a * pa - b * pb) / sig
    return k * g, jac


def _fit_profiles(
    darkness: NDArray[np.float64],
    s: NDArray[np.float64],
    weight: NDArray[np.float64],
    theta0: NDArray[np.float64],
    free: tuple[int, ...],
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
    *,
    n_iter: int = 40,
    with_cov: bool = True,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Batched, bounded Levenberg-Marquardt fit of the darkness model to many profiles.

    Parameters
    ----------
    darkness, s, weight : ndarray of shape (n, m)
        Observed darkness, offsets (pixels) and sample weights (0 excludes a sample).
    theta0 : ndarray of shape (n, 4)
        Start values; parameters not in ``free`` stay fixed.
    free : tuple of int
        Indices of the fitted parameters.
    lower, upper : ndarray of shape (n, 4)
        Bounds.

    Returns
    -------
    theta : ndarray of shape (n, 4)
    cov : ndarray of shape (n, 4, 4)
        Unscaled covariance ``(J^T W J)^-1`` of the free parameters (zero rows/cols elsewhere).
    sse : ndarray of shape (n,)
        Weighted sum of squared residuals.
    """
    n = theta0.shape[0]
    fi = np.asarray(free)
    theta = np.clip(theta0, lower, upper)
    model, jac = _model(theta, s, jacobian=True)
    resid = (darkness - model) * weight
    sse = (resid * (darkness - model)).sum(1)
    lam = np.full(n, 1e-2)
    active = np.ones(n, bool)
    eye = np.eye(fi.size)
    for _ in range(n_iter):
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        j = jac[idx][..., fi]  # (a, m, p)
        wj = j * weight[idx, :, None]
        jtj = np.einsum("amp,amq->apq", wj, j)
        jtr = np.einsum("amp,am->ap", wj, darkness[idx] - model[idx])
        diag = np.einsum("app->ap", jtj)
        damp = jtj + lam[idx, None, None] * (diag[:, :, None] * eye + 1e-9 * eye)
        try:
            step = np.linalg.solve(damp, jtr[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(damp.reshape(-1, fi.size), jtr.reshape(-1), rcond=None)[0]
            step = step.reshape(jtr.shape)
        trial = theta[idx].copy()
        trial[:, fi] += step
        trial = np.clip(trial, lower[idx], upper[idx])
        t_model, t_jac = _model(trial, s[idx], jacobian=True)
        t_res = darkness[idx] - t_model
        t_sse = (t_res * t_res * weight[idx]).sum(1)
        better = t_sse < sse[idx]
        acc = idx[better]
        theta[acc] = trial[better]
        model[acc] = t_model[better]
        jac[acc] = t_jac[better]
        gain = sse[acc] - t_sse[better]
        sse[acc] = t_sse[better]
        lam[acc] = np.maximum(lam[acc] / 3.0, 1e-7)
        rej = idx[~better]
        lam[rej] = lam[rej] * 4.0
        # Converged: a relative improvement under 1e-7, or damping so large nothing moves.
        done = np.zeros(n, bool)
        done[acc[gain <= 1e-7 * np.maximum(sse[acc], 1e-12)]] = True
        done[rej[lam[rej] > 1e6]] = True
        active &= ~done
    cov = np.zeros((n, 4, 4))
    if not with_cov:
        return theta, cov, sse
    j = jac[..., fi]
    wj = j * weight[..., None]
    jtj = np.einsum("nmp,nmq->npq", wj, j) + 1e-12 * eye
    cov_free = np.linalg.pinv(jtj)
    cov[:, fi[:, None], fi[None, :]] = cov_free
    return theta, cov, sse


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------
def _weighted_median(values: NDArray[np.float64], weights: NDArray[np.float64]) -> float:
    """Median of ``values`` with non-negative ``weights`` (NaN if no positive weight)."""
    ok = np.isfinite(values) & np.isfinite(weights) & (weights > 0)
    if not ok.any():
        return float("nan")
    v, w = values[ok], weights[ok]
    order = np.argsort(v)
    v, w = v[order], w[order]
    cum = np.cumsum(w)
    return float(v[np.searchsorted(cum, 0.5 * cum[-1])])


def _pool(
    values: NDArray[np.float64], var: NDArray[np.float64]
) -> tuple[float, float]:
    """Robust inverse-variance pooling: (weighted median, its standard uncertainty).

    The uncertainty is the inverse-variance standard error, inflated by the observed scatter
    when the values disagree more than their variances say (reduced chi-square > 1), and by
    the 1.25 efficiency factor of a median.
    """
    ok = np.isfinite(values) & np.isfinite(var) & (var > 0)
    if not ok.any():
        return float("nan"), float("nan")
    v, s2 = values[ok], var[ok]
    wts = 1.0 / s2
    est = _weighted_median(v, wts)
    se = math.sqrt(1.0 / wts.sum())
    if v.size > 2:
        z = (v - est) / np.sqrt(s2)
        chi2 = float(np.median(z * z) / 0.455)  # robust reduced chi-square (median of chi2_1)
        se *= math.sqrt(max(chi2, 1.0))
    return est, 1.25 * se


# --------------------------------------------------------------------------------------------
# Limit
# --------------------------------------------------------------------------------------------
def measurable_limit_px(
    noise_sd: ArrayLike,
    depth: ArrayLike,
    psf_sigma_px: ArrayLike,
    *,
    min_width_px: float = 1.0,
    limit_z: float = 2.0,
) -> NDArray[np.float64]:
    """Narrowest width that a single profile can tell apart from no crack.

    For a crack much narrower than the blur, the fitted width's noise-only standard deviation
    is ``noise_sd * sqrt(2 sqrt(pi) sigma) / depth`` (the matched-filter limit, with noise
    correlated over one pixel). The limit is ``limit_z`` times that, and never under
    ``min_width_px``: below one pixel a crack is a mixed pixel, and its width rests entirely on
    the depth borrowed from the rest of the crack.

    Parameters
    ----------
    noise_sd : float or ndarray, relative to the wall brightness
        Standard deviation of the darkness noise (image noise plus texture) of the profile.
    depth : float or ndarray
        Relative depth ``k`` of the crack (0-1).
    psf_sigma_px : float or ndarray, pixels
        Effective blur.
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
    1.88
    """
    noise = np.asarray(noise_sd, dtype=np.float64)
    k = np.maximum(np.asarray(depth, dtype=np.float64), 1e-6)
    sig = np.asarray(psf_sigma_px, dtype=np.float64)
    sd0 = noise * np.sqrt(2.0 * math.sqrt(math.pi) * np.maximum(sig, 0.3)) / k
    return np.maximum(limit_z * sd0, min_width_px)


def px_to_mm(width_px: ArrayLike, gsd_m: float) -> NDArray[np.float64]:
    """Convert widths (or a limit) from pixels to millimetres with the ground sample distance.

    Parameters
    ----------
    width_px : float or ndarray, pixels
    gsd_m : float
        Ground sample distance: metres on the wall per pixel.

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
    search_px: float = 2.5,
    pool_radius_px: float = 4.0,
    direction_radius_px: float = 5.0,
    step_px: float = 0.25,
) -> WidthMeasurement:
    """Measure crack width from the image's intensity profiles at samples along the crack.

    At each sample the grey level is sampled (cubic spline) along the normal. The wall's
    brightness under the crack is the image's grey closing (a dark band narrower than the
    structuring element is filled from its surroundings, texture edges are kept), rescaled by a
    line through the medians of two stretches just outside the band. The darkness profile
    ``1 - image / wall`` is fitted with a band of width ``w`` and depth ``k`` blurred by a
    Gaussian of ``sigma`` (see the module docstring). ``sigma`` is pooled over all samples (one
    PSF per image) and ``k`` over each ``labels`` group, each weighted by how well a profile
    determines it; every width is then refitted with the pooled values and, finally, replaced
    by the weighted median of the widths within ``pool_radius_px`` along the same crack.

    Parameters
    ----------
    grey : ndarray of shape (H, W), float or int
        Image brightness (a single band). NaN is nodata.
    rows, cols : ndarray of shape (n,), float or int, pixels
        Sample positions on the crack (e.g. skeleton pixels), within ``search_px`` of the
        crack's centreline.
    normals : ndarray of shape (n, 2), float, optional
        Unit normals ``(row, col)``. None: from the samples (:func:`profile_normals`).
    labels : ndarray of shape (n,), int, optional
        Crack (group) of each sample: the depth is pooled per group, and widths are smoothed
        only within a group. None: one crack.
    psf_sigma_px : float, optional
        Effective blur (pixels) if known (e.g. from a calibration target); None: estimated.
    max_width_px : float
        Widest crack measured (pixels); wider dark bands are reported as not measured.
    min_width_px : float
        Floor of the measurable limit (pixels), see :func:`measurable_limit_px`.
    limit_z : float
        Multiple of the noise-only width uncertainty that sets the limit.
    search_px : float
        How far from the sample (pixels, along the normal) the band's centre may lie.
    pool_radius_px : float
        Radius (pixels) of the robust smoothing along the crack; 0 keeps each sample's own fit.
    direction_radius_px : float
        Neighbourhood radius for normals computed here (pixels).
    step_px : float
        Sampling step along the normal (pixels).

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
        raise ValueError(f"labels has {lab.size} values for {n} samples.")
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
    tail = 3.0 * max(sig_guess, 0.8) + 1.0
    prof = _take_profiles(
        img, bad, r0, c0, nrm, tail=tail, max_width_px=max_width_px,
        search_px=search_px, step_px=step_px,
    )
    ok = prof.ok
    if not ok.any():
        return WidthMeasurement(**out)
    idx_ok = np.nonzero(ok)[0]
    theta4, cov4, _ = prof.fit(prof.theta0, (_K, _W, _C, _S), idx_ok)
    s2 = prof.s2

    k_arr, k_rel, sig_arr = _joint_depth_blur(prof, theta4, lab, ok, psf_sigma_px=psf_sigma_px)
    k_used = k_arr
    sig = sig_arr
    # Final width: depth fixed to the crack's, blur free (it absorbs JPEG and interpolation
    # smoothing, so the width follows the darkness area rather than the profile's spread).
    th = theta4.copy()
    th[:, _K] = k_used
    th[:, _S] = sig
    th2, cov2, sse2 = prof.fit(th, FINAL_FREE, idx_ok)
    w_fit = np.where(ok, th2[:, _W], np.nan)
    # A profile that the model does not fit (a texture edge, a crossing joint) is less
    # trustworthy than its noise alone says: scale its variance by its normalised misfit.
    misfit = np.maximum(prof.misfit(sse2), 1.0)
    var_fit = np.where(ok, s2 * cov2[:, _W, _W] * misfit, np.nan)

    if pool_radius_px > 0:
        w_rep, var_rep = _smooth_along_crack(r0, c0, lab, ok, w_fit, var_fit, pool_radius_px)
    else:
        w_rep, var_rep = w_fit, var_fit
    w_sd = np.sqrt(var_rep + (w_rep * k_rel) ** 2)
    limit = measurable_limit_px(
        prof.noise, k_used, sig_arr, min_width_px=min_width_px, limit_z=limit_z
    )
    below = ok & (w_rep < limit)
    out.update(
        width_px=np.where(ok & ~below, w_rep, np.nan),
        width_sd_px=np.where(ok, w_sd, np.nan),
        below_limit=below,
        limit_px=np.where(ok, limit, np.nan),
        measured=ok,
        fitted_width_px=w_fit,
        centre_offset_px=np.where(ok, th2[:, _C] + prof.centre, np.nan),
        depth=k_used,
        psf_sigma_px=sig_arr,
    )
    return WidthMeasurement(**out)


#: Grids of the per-crack search for depth and blur (log-spaced), and the weak prior that
#: decides where a crack's profiles cannot (a crack equally narrow everywhere).
_K_GRID = np.exp(np.linspace(np.log(0.03), np.log(1.0), 13))
_S_GRID = np.exp(np.linspace(np.log(0.35), np.log(2.4), 9))
_MAX_JOINT = 200
_PRIOR_K, _PRIOR_K_SD = 0.5, 1.5  # logit scale
_PRIOR_S, _PRIOR_S_SD = 0.9, 0.35  # log scale, pixels


def _joint_depth_blur(
    prof: _Profiles,
    theta4: NDArray[np.float64],
    lab: NDArray,
    ok: NDArray[np.bool_],
    *,
    psf_sigma_px: float | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Depth ``k`` and blur ``sigma`` shared by each crack: a joint, robust profile fit.

    For each ``(k, sigma)`` on a grid every profile's width and centre are fitted; the crack's
    cost is the sum over its profiles of a robust (Cauchy) function of each profile's
    normalised misfit, plus a weak prior on ``k`` and ``sigma``. The minimum is refined on a
    finer grid. The relative uncertainty of ``k`` is where the cost rises by one unit of the
    crack's misfit scale.

    Returns per-sample arrays: depth, its relative uncertainty, and sigma (NaN where not ok).
    """
    n = prof.n
    idx_all = np.nonzero(ok)[0]
    # At most _MAX_JOINT evenly spread samples per crack decide its depth and blur.
    keep = np.zeros(n, bool)
    for g in np.unique(lab[idx_all]):
        members = idx_all[lab[idx_all] == g]
        pick = np.unique(np.linspace(0, members.size - 1, min(members.size, _MAX_JOINT)).astype(int))
        keep[members[pick]] = True
    idx = np.nonzero(keep)[0]
    length = np.zeros(n)
    for cl in prof.classes:
        length[cl["idx"]] = cl["weight"].sum(1) * (cl["s"][0, 1] - cl["s"][0, 0])
    scale = prof.noise**2 * np.maximum(length, 1.0)  # expected SSE * step of a good fit
    step = np.zeros(n)
    for cl in prof.classes:
        step[cl["idx"]] = cl["s"][0, 1] - cl["s"][0, 0]
    groups, gi = np.unique(lab[idx], return_inverse=True)
    n_g = groups.size
    warm = theta4.copy()

    def cost(k_g: NDArray[np.float64], s_g: NDArray[np.float64]) -> NDArray[np.float64]:
        th = warm.copy()
        th[idx, _K] = k_g[gi]
        th[idx, _S] = s_g[gi]
        fitted, _, sse = prof.fit(th, (_W, _C), idx, n_iter=6, with_cov=False)
        x = sse[idx] * step[idx] / scale[idx]
        per = np.maximum(length[idx], 1.0) * 4.0 * np.log1p(x / 4.0)
        c = np.bincount(gi, per, n_g)
        logit = np.log(k_g / (1 - np.minimum(k_g, 0.999)))
        prior = ((logit - math.log(_PRIOR_K / (1 - _PRIOR_K))) / _PRIOR_K_SD) ** 2
        if psf_sigma_px is None:
            prior += (np.log(s_g / _PRIOR_S) / _PRIOR_S_SD) ** 2
        return c + prior

    s_grid = _S_GRID if psf_sigma_px is None else np.array([float(psf_sigma_px)])
    table = np.empty((n_g, _K_GRID.size, s_grid.size))
    for a, k in enumerate(_K_GRID):
        for b, sg in enumerate(s_grid):
            table[:, a, b] = cost(np.full(n_g, k), np.full(n_g, sg))
    best = table.reshape(n_g, -1).argmin(1)
    ka, sb = np.unravel_index(best, table.shape[1:])
    k_best, s_best = _K_GRID[ka], s_grid[sb]
    # Refine on a finer grid around each crack's minimum.
    fk = np.exp(np.linspace(-0.3, 0.3, 7))
    fs = np.exp(np.linspace(-0.18, 0.18, 5)) if psf_sigma_px is None else np.ones(1)
    fine = np.empty((n_g, fk.size, fs.size))
    for a, mk in enumerate(fk):
        for b, ms in enumerate(fs):
            fine[:, a, b] = cost(np.minimum(k_best * mk, 1.0), s_best * ms)
    best = fine.reshape(n_g, -1).argmin(1)
    fa, fb = np.unravel_index(best, fine.shape[1:])
    k_g = np.minimum(k_best * fk[fa], 1.0)
    s_g = s_best * fs[fb]
    # Uncertainty of log k: profile of the cost over k (min over sigma) on both grids.
    prof_k = np.concatenate([table.min(2), fine.min(2)], axis=1)
    log_k = np.concatenate(
        [np.broadcast_to(np.log(_K_GRID), (n_g, _K_GRID.size)),
         np.log(k_best)[:, None] + np.log(fk)[None, :]], axis=1)
    f_min = prof_k.min(1)
    n_s = np.bincount(gi, minlength=n_g)
    unit = np.maximum(f_min / np.maximum(n_s, 1), 1.0)  # misfit scale per profile
    inside = prof_k <= (f_min + unit)[:, None]
    lo = np.where(inside, log_k, np.inf).min(1)
    hi = np.where(inside, log_k, -np.inf).max(1)
    k_rel_g = np.maximum(0.5 * (hi - lo), 0.02)
    for g in range(n_g):
        logger.debug("width group %s: %d samples, depth %.3f (x/ %.2f), sigma %.2f px",
                     groups[g], n_s[g], k_g[g], math.exp(k_rel_g[g]), s_g[g])
    k_out = np.full(n, np.nan)
    r_out = np.full(n, np.nan)
    s_out = np.full(n, np.nan)
    where = np.searchsorted(groups, lab[idx_all])
    k_out[idx_all] = k_g[where]
    r_out[idx_all] = k_rel_g[where]
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
        nbrs = cKDTree(pts).query_ball_point(pts, radius_px)
        for a, nb in zip(idx, nbrs):
            j = idx[nb]
            est, se = _pool(width[j], var[j])
            if np.isfinite(est):
                out_w[a] = est
                out_v[a] = se**2
    return out_w, out_v


def _closing_radii(max_width_px: float, fill_px: float) -> list[int]:
    """Half-sizes (pixels) of the square closings, fine steps first, up to the widest band."""
    radii = [2, 3, 4, 5, 6, 7, 8]
    while radii[-1] < max_width_px / 2.0 + fill_px:
        radii.append(int(math.ceil(radii[-1] * 1.2)))
    return radii


@dataclass(eq=False)
class _Profiles:
    """Fine darkness profiles of all samples, in classes of equal length, and their fit."""

    n: int
    classes: list[dict[str, NDArray]]
    ok: NDArray[np.bool_]
    centre: NDArray[np.float64]
    noise: NDArray[np.float64]
    s2: NDArray[np.float64]
    theta0: NDArray[np.float64]

    def misfit(self, sse: NDArray[np.float64]) -> NDArray[np.float64]:
        """Normalised misfit of each profile: 1 for residuals at the noise level."""
        out = np.full(self.n, np.nan)
        for cl in self.classes:
            step = cl["s"][0, 1] - cl["s"][0, 0]
            length = np.maximum(cl["weight"].sum(1) * step, 1.0)
            i = cl["idx"]
            out[i] = sse[i] * step / (self.noise[i] ** 2 * length)
        return out

    def fit(
        self,
        theta0: NDArray[np.float64],
        free: tuple[int, ...],
        idx: NDArray[np.intp],
        *,
        n_iter: int = 40,
        with_cov: bool = True,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Fit the ``free`` parameters of every usable profile, class by class."""
        theta = np.zeros((self.n, 4))
        cov = np.zeros((self.n, 4, 4))
        sse = np.zeros(self.n)
        want = np.zeros(self.n, bool)
        want[idx] = True
        for cl in self.classes:
            sel = want[cl["idx"]]
            if not sel.any():
                continue
            i = cl["idx"][sel]
            lower = cl["lower"][sel].copy()
            upper = cl["upper"][sel].copy()
            fixed = [p for p in range(4) if p not in free]
            lower[:, fixed] = theta0[i][:, fixed]
            upper[:, fixed] = theta0[i][:, fixed]
            theta[i], cov[i], sse[i] = _fit_profiles(
                cl["darkness"][sel], cl["s"][sel], cl["weight"][sel], theta0[i], free,
                lower, upper, n_iter=n_iter, with_cov=with_cov,
            )
        return theta, cov, sse


def _coarse_band(
    coeffs: NDArray[np.float64],
    closing: NDArray[np.float64],
    bad: NDArray[np.float32] | None,
    r0: NDArray[np.float64],
    c0: NDArray[np.float64],
    nrm: NDArray[np.float64],
    *,
    reach_px: float,
    search_px: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Centre and half-width (pixels) of the dark band on each normal, on ``1 - image / closing``.

    Coarse scan (step 0.5 px): the darkest point within ``search_px`` of the sample; the band
    runs outwards to where the darkness falls under half of that. Returns (centre, half, found).
    """
    step = 0.5
    s = np.arange(-reach_px, reach_px + step / 2, step)
    rr = r0[:, None] + nrm[:, 0, None] * s
    cc = c0[:, None] + nrm[:, 1, None] * s
    p, valid = _sample(coeffs, bad, closing.shape, rr, cc)
    bgr = ndimage.map_coordinates(
        closing, [rr.ravel(), cc.ravel()], order=1, mode="nearest"
    ).reshape(rr.shape)
    with np.errstate(all="ignore"):
        dark = np.where(valid & (bgr > 0), 1.0 - p / bgr, 0.0)
    dark = ndimage.uniform_filter1d(dark, 3, axis=1, mode="nearest")
    n, m = dark.shape
    mid = m // 2
    k_reach = min(int(round(search_px / step)), mid)
    i_pk = np.argmax(dark[:, mid - k_reach : mid + k_reach + 1], axis=1) + mid - k_reach
    pk = dark[np.arange(n), i_pk]
    below = dark < 0.5 * pk[:, None]
    cols = np.arange(m)[None, :]
    i_hi = np.where(below & (cols > i_pk[:, None]), cols, m).min(axis=1)
    i_lo = np.where(below & (cols < i_pk[:, None]), cols, -1).max(axis=1)
    found = (i_lo >= 0) & (i_hi < m) & (pk > 0) & valid[:, mid]
    # Every sample across the band must be usable (no border, no nodata).
    inside = (cols >= i_lo[:, None]) & (cols <= i_hi[:, None])
    found &= ~(inside & ~valid).any(axis=1)
    e_lo = s[np.clip(i_lo, 0, m - 1)] + step / 2
    e_hi = s[np.clip(i_hi, 0, m - 1)] - step / 2
    return 0.5 * (e_lo + e_hi), np.maximum(0.5 * (e_hi - e_lo), 0.0), found


def _band_from_sides(
    coeffs: NDArray[np.float64],
    bad: NDArray[np.float32] | None,
    shape: tuple[int, int],
    r0: NDArray[np.float64],
    c0: NDArray[np.float64],
    nrm: NDArray[np.float64],
    *,
    tail: float,
    bg_len: float,
    max_width_px: float,
    search_px: float,
    n_iter: int = 4,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Centre and half-width (pixels) of the dark band, with the wall taken from its two sides.

    Coarse scan (step 0.5 px). Start at the darkest point within ``search_px`` with a one-pixel
    band; then repeat: the wall is the line through the medians of ``bg_len`` px of profile
    beyond the band's tails on each side, the darkness is ``1 - profile / wall``, and the band
    runs from the darkest point within it out to half of its darkness.
    """
    step = 0.5
    reach = max_width_px / 2.0 + tail + bg_len + 2.0
    s = np.arange(-reach, reach + step / 2, step)
    rr = r0[:, None] + nrm[:, 0, None] * s
    cc = c0[:, None] + nrm[:, 1, None] * s
    p, valid = _sample(coeffs, bad, shape, rr, cc)
    p = np.where(valid, p, np.nan)
    ps = ndimage.uniform_filter1d(np.nan_to_num(p, nan=np.nanmax(p) if np.isfinite(p).any() else 0.0),
                                  3, axis=1, mode="nearest")
    n, m = p.shape
    mid = m // 2
    k_reach = min(int(round(search_px / step)), mid)
    i_c = np.argmin(ps[:, mid - k_reach : mid + k_reach + 1], axis=1) + mid - k_reach
    centre = s[i_c]
    half = np.full(n, 0.5)
    found = np.zeros(n, bool)
    sv = s[None, :]
    for _ in range(n_iter):
        inner_edge = half + tail
        left = valid & (sv < (centre - inner_edge)[:, None]) & (sv >= (centre - inner_edge - bg_len)[:, None])
        right = valid & (sv > (centre + inner_edge)[:, None]) & (sv <= (centre + inner_edge + bg_len)[:, None])
        m_l, m_r = _masked_median(p, left), _masked_median(p, right)
        s_l, s_r = _masked_mean(np.broadcast_to(sv, p.shape), left), _masked_mean(np.broadcast_to(sv, p.shape), right)
        both = np.isfinite(m_l) & np.isfinite(m_r)
        slope = np.where(both, (m_r - m_l) / np.where(both, s_r - s_l, 1.0), 0.0)
        one = np.where(np.isfinite(m_l), m_l, m_r)
        level = np.where(both, 0.5 * (m_l + m_r) - slope * 0.5 * (s_l + s_r), one)
        wall = level[:, None] + slope[:, None] * sv
        with np.errstate(all="ignore"):
            dark = np.where(valid & (wall > 0), 1.0 - ps / wall, 0.0)
        near = np.abs(sv - centre[:, None]) <= (half + 1.0)[:, None]
        i_pk = np.argmax(np.where(near, dark, -np.inf), axis=1)
        pk = dark[np.arange(n), i_pk]
        below = dark < 0.5 * pk[:, None]
        cols = np.arange(m)[None, :]
        i_hi = np.where(below & (cols > i_pk[:, None]), cols, m).min(axis=1)
        i_lo = np.where(below & (cols < i_pk[:, None]), cols, -1).max(axis=1)
        found = (i_lo >= 0) & (i_hi < m) & (pk > 0) & np.isfinite(level)
        e_lo = s[np.clip(i_lo, 0, m - 1)] + step / 2
        e_hi = s[np.clip(i_hi, 0, m - 1)] - step / 2
        new_c = 0.5 * (e_lo + e_hi)
        new_h = np.clip(0.5 * (e_hi - e_lo), 0.25, max_width_px / 2.0)
        centre = np.where(found & (np.abs(new_c) <= search_px + new_h), new_c, centre)
        half = np.where(found, new_h, half)
    inside = (np.abs(sv - centre[:, None]) <= half[:, None])
    found &= ~(inside & ~valid).any(axis=1) & valid[:, mid]
    return centre, half, found


def _take_profiles(
    img: NDArray[np.float64],
    bad: NDArray[np.float32] | None,
    r0: NDArray[np.float64],
    c0: NDArray[np.float64],
    nrm: NDArray[np.float64],
    *,
    tail: float,
    max_width_px: float,
    search_px: float,
    step_px: float,
) -> _Profiles:
    """Locate the dark band on each normal and take its fine darkness profile.

    The wall under the crack is the grey closing of the (lightly smoothed) image with the
    smallest square that fills the band and its blur: too small a square leaves the band's
    middle unfilled, too large a one bridges texture (bricks between mortar joints) and makes
    the wall look dark. So each sample takes the smallest half-size ``r`` (of a fine ladder)
    with ``r >= half + fill`` at which the band measured on ``1 - image / closing_r`` no longer
    widens at the next ``r``. The fine profile (``step_px``) spans the band, its tails and
    3 px of wall on each side; the wall level is a line through the medians of
    ``image / closing_r`` on the two sides.
    """
    n = r0.size
    shape = img.shape
    coeffs = ndimage.spline_filter(img, order=3, mode="nearest")
    smooth = ndimage.gaussian_filter(img, 0.7, mode="nearest")
    bg_len = 3.0
    fill = 2.0 * (tail - 1.0) / 3.0 + 1.5  # two blur sigmas and a pixel and a half of wall
    centre, half, has = _band_from_sides(
        coeffs, bad, shape, r0, c0, nrm, tail=tail, bg_len=bg_len,
        max_width_px=max_width_px, search_px=search_px,
    )
    has &= 2.0 * half <= max_width_px
    if _BG == "closing":
        radii = _closing_radii(max_width_px, fill)
        pick = np.searchsorted(np.asarray(radii), half + fill)
        has &= pick < len(radii)
        pick = np.minimum(pick, len(radii) - 1)
        closings = {j: ndimage.grey_closing(smooth, size=(2 * radii[j] + 1,) * 2, mode="reflect")
                    for j in np.unique(pick[has])}
    else:
        pick = np.zeros(n, np.int64)
        closings = {0: None}
    ok = np.zeros(n, bool)
    noise = np.full(n, np.nan)
    s2 = np.full(n, np.nan)
    theta0 = np.zeros((n, 4))
    classes: list[dict[str, NDArray]] = []
    for j, closing in closings.items():
        idx = np.nonzero(has & (pick == j))[0]
        if idx.size == 0:
            continue
        h_in = half[idx] + tail
        h_out = h_in + bg_len
        u = np.arange(-h_out.max(), h_out.max() + step_px / 2, step_px)
        sf = np.broadcast_to(u, (idx.size, u.size))
        rr = r0[idx, None] + nrm[idx, 0, None] * (centre[idx, None] + sf)
        cc = c0[idx, None] + nrm[idx, 1, None] * (centre[idx, None] + sf)
        p, valid = _sample(coeffs, bad, shape, rr, cc)
        if closing is None:
            q = p
        else:
            bgr = ndimage.map_coordinates(
                closing, [rr.ravel(), cc.ravel()], order=1, mode="nearest"
            ).reshape(rr.shape)
            with np.errstate(all="ignore"):
                q = np.where(bgr > 0, p / bgr, np.nan)
        a = np.abs(sf)
        in_win = (a <= h_out[:, None]) & valid & np.isfinite(q)
        is_bg = in_win & (a > h_in[:, None])
        left, right = is_bg & (sf < 0), is_bg & (sf > 0)
        m_l, m_r = _masked_median(q, left), _masked_median(q, right)
        s_l, s_r = _masked_mean(sf, left), _masked_mean(sf, right)
        both = np.isfinite(m_l) & np.isfinite(m_r)
        slope = np.where(both, (m_r - m_l) / np.where(both, s_r - s_l, 1.0), 0.0)
        one = np.where(np.isfinite(m_l), m_l, m_r)
        level = np.where(both, 0.5 * (m_l + m_r) - slope * 0.5 * (s_l + s_r), one)
        with np.errstate(all="ignore"):
            darkness = 1.0 - q / (level[:, None] + slope[:, None] * sf)
        good = np.isfinite(level) & (level > 0)
        inner = (a <= h_in[:, None]) & in_win
        good &= inner.sum(1) * step_px >= 2.0 * half[idx] + 2.0
        weight = (in_win & good[:, None]).astype(np.float64)
        darkness = np.where(weight > 0, darkness, 0.0)
        bg_res = np.where(is_bg, darkness, np.nan)
        nz = 1.4826 * _masked_median(np.abs(bg_res - _masked_median(bg_res, is_bg)[:, None]),
                                     is_bg)
        nz = np.where(np.isfinite(nz), np.maximum(nz, 1e-3), 1e-2)
        # Start values from the moments of the inner darkness.
        din = np.where(inner, darkness, 0.0)
        area = din.sum(1) * step_px
        peak = ndimage.uniform_filter1d(din, max(int(round(1.0 / step_px)), 1), axis=1).max(1)
        k0 = np.clip(peak, 0.02, 1.0)
        w0 = np.clip(area / k0, 0.2, 2 * h_in)
        cen0 = np.where(area > 0, (din * sf).sum(1) * step_px / np.maximum(area, 1e-9), 0.0)
        sig0 = np.full(idx.size, (tail - 1.0) / 3.0)
        theta0[idx] = np.column_stack([k0, w0, np.clip(cen0, -h_in, h_in), sig0])
        lower = np.column_stack(
            [np.full(idx.size, 1e-3), np.full(idx.size, 0.02), -h_in, np.full(idx.size, 0.3)]
        )
        upper = np.column_stack(
            [np.full(idx.size, 1.0), 2.0 * h_in + 1.0, h_in, np.full(idx.size, 3.0)]
        )
        ok[idx] = good
        noise[idx] = nz
        # Residual variance per unit length: samples finer than a pixel are correlated.
        s2[idx] = nz**2 / min(step_px, 1.0)
        classes.append(dict(idx=idx, s=np.ascontiguousarray(sf), darkness=darkness,
                            weight=weight, lower=lower, upper=upper))
    return _Profiles(n=n, classes=classes, ok=ok, centre=centre, noise=noise, s2=s2,
                     theta0=theta0)


def _masked_median(values: NDArray[np.float64], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Row-wise median of ``values`` where ``mask`` (NaN for an empty row)."""
    v = np.where(mask, values, np.nan)
    out = np.full(v.shape[0], np.nan)
    has = mask.any(1)
    if has.any():
        out[has] = np.nanmedian(v[has], axis=1)
    return out


def _masked_mean(values: NDArray[np.float64], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Row-wise mean of ``values`` where ``mask`` (NaN for an empty row)."""
    cnt = mask.sum(1)
    return np.where(cnt > 0, (values * mask).sum(1) / np.maximum(cnt, 1), np.nan)


# --------------------------------------------------------------------------------------------
# Per-crack aggregate
# --------------------------------------------------------------------------------------------
def aggregate_crack_width(
    width_px: ArrayLike,
    width_sd_px: ArrayLike,
    below_limit: ArrayLike,
    *,
    limit_px: ArrayLike | None = None,
    min_samples: int = 3,
) -> CrackWidth:
    """Summarise one crack's sample widths: mean with uncertainty, p95, max, fraction below.

    Samples below the limit or not measured are left out of the statistics (they are counted
    in ``fraction_below_limit`` when below the limit). The mean's uncertainty combines the
    samples' scatter (standard error) with their mean uncertainty as a fully correlated part,
    since the crack's depth, shared by all its samples, is one of its sources. ``p95`` and
    ``max`` are of the measured widths, so they carry the per-sample noise.

    Parameters
    ----------
    width_px, width_sd_px : ndarray of shape (n,), float, pixels
        From :class:`WidthMeasurement` (NaN where not a number).
    below_limit : ndarray of shape (n,), bool
    limit_px : ndarray of shape (n,), float, pixels, optional
        Per-sample limit; the summary reports its median.
    min_samples : int
        Fewest measured samples for a number.

    Returns
    -------
    CrackWidth
    """
    w = np.asarray(width_px, dtype=np.float64).ravel()
    sd = np.asarray(width_sd_px, dtype=np.float64).ravel()
    below = np.asarray(below_limit, dtype=bool).ravel()
    ok = np.isfinite(w) & ~below
    considered = ok | below
    frac = float(below.sum() / considered.sum()) if considered.any() else float("nan")
    lim = float("nan")
    if limit_px is not None:
        lv = np.asarray(limit_px, dtype=np.float64).ravel()
        if np.isfinite(lv).any():
            lim = float(np.nanmedian(lv))
    if ok.sum() < min_samples:
        nan = float("nan")
        return CrackWidth(nan, nan, nan, nan, frac, int(ok.sum()), lim)
    wv = w[ok]
    sdv = sd[ok]
    mean = float(wv.mean())
    se = float(wv.std(ddof=1) / math.sqrt(wv.size))
    shared = float(np.nanmedian(sdv)) / math.sqrt(max(wv.size, 1)) if np.isfinite(sdv).any() else 0.0
    return CrackWidth(
        mean_px=mean,
        mean_sd_px=math.sqrt(se**2 + shared**2),
        p95_px=float(np.percentile(wv, 95)),
        max_px=float(wv.max()),
        fraction_below_limit=frac,
        n_samples=int(wv.size),
        limit_px=lim,
    )
