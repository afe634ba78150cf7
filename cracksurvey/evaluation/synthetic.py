"""Synthetic cracks of known width on real wall textures, for width benchmarks and tests.

A crack is a band of known, possibly varying, width around a centreline, darker than the wall
by a factor ``1 - contrast`` (a shadow: multiplicative). It is rendered the way a camera sees it:

1. on a grid ``supersample`` times finer than the image, each fine pixel gets the fraction of its
   area inside the band (a linear ramp over one fine pixel across the exact edge), so a band of
   width ``w`` darkens exactly ``w`` pixel-widths per unit length, whatever ``w`` and angle;
2. the texture, upsampled to the fine grid, is multiplied by ``1 - contrast * coverage``;
3. the result is blurred with a Gaussian PSF (``psf_sigma_px`` in image pixels) and averaged
   over ``supersample x supersample`` blocks (the pixel's own aperture);
4. Gaussian noise is added, values are clipped to ``[0, 255]``, and the image is optionally
   JPEG-compressed and decoded.

Ground truth: the true centreline (dense points, image pixel coordinates with pixel centres at
integers), the true width and the unit normal at each point, the exact pixel coverage of the band
and the mask of pixels at least half covered.

Two sources of crack geometry: :func:`random_centreline` with :func:`random_width_profile`
(straight or curved, any angle), and :func:`geometry_from_crack_map` for a real binary crack
map (a traced crack map at a finer scale than the image, e.g. a seismic test's crack map).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

__all__ = [
    "SyntheticCrack",
    "WidthKind",
    "geometry_from_crack_map",
    "random_centreline",
    "random_wall_crop",
    "random_width_profile",
    "render_coverage",
    "render_crack",
    "skeleton_samples",
]

logger = logging.getLogger(__name__)

#: Width along the crack: one value, or a smooth random variation (real cracks taper and widen).
WidthKind = Literal["constant", "varying"]


@dataclass(frozen=True, eq=False)
class SyntheticCrack:
    """A rendered synthetic crack and its ground truth.

    Attributes
    ----------
    image : ndarray of shape (H, W) or (bands, H, W), float32, grey levels in [0, 255]
        The rendered image (after noise and JPEG, when asked for).
    centreline_rc : ndarray of shape (n, 2), float64, pixels
        True centreline points ``(row, col)``; pixel centres are at integer coordinates. Empty
        when the crack came from a crack map (see ``skeleton_rc``).
    width_px : ndarray of shape (n,), float64, pixels
        True crack width at each centreline point.
    normal_rc : ndarray of shape (n, 2), float64
        Unit normal of the centreline at each point.
    coverage : ndarray of shape (H, W), float32 in [0, 1]
        Fraction of each pixel's area inside the crack band (before blur).
    mask : ndarray of shape (H, W), bool
        Pixels at least half covered by the crack.
    psf_sigma_px, contrast, noise_sd, jpeg_quality : float, float, float, int or None
        Rendering parameters (PSF sigma in pixels, darkening fraction, noise standard deviation
        in grey levels, JPEG quality or None).
    """

    image: NDArray[np.float32]
    centreline_rc: NDArray[np.float64]
    width_px: NDArray[np.float64]
    normal_rc: NDArray[np.float64]
    coverage: NDArray[np.float32]
    mask: NDArray[np.bool_]
    psf_sigma_px: float
    contrast: float
    noise_sd: float
    jpeg_quality: int | None


def random_centreline(
    shape: tuple[int, int],
    *,
    rng: np.random.Generator,
    curved: bool,
    angle_deg: float | None = None,
    min_radius_px: float = 25.0,
    spacing_px: float = 0.1,
) -> NDArray[np.float64]:
    """A random centreline that crosses a ``shape`` image through its central part.

    Parameters
    ----------
    shape : (rows, cols)
        Image size in pixels.
    rng : numpy Generator
    curved : bool
        False: a straight line. True: the heading wanders smoothly (two random sinusoids) with a
        radius of curvature never below ``min_radius_px``.
    angle_deg : float, optional
        Mean heading in degrees (counter-clockwise from the column axis); random when None.
    min_radius_px : float
        Smallest radius of curvature of a curved centreline (pixels).
    spacing_px : float
        Distance between consecutive points (pixels).

    Returns
    -------
    centreline_rc : ndarray of shape (n, 2), float64, pixels
        Points ``(row, col)``; the line runs a few pixels past the image on both ends.
    """
    rows, cols = shape
    theta0 = np.deg2rad(angle_deg) if angle_deg is not None else rng.uniform(0.0, np.pi)
    half = np.hypot(rows, cols) + 8.0  # long enough for a wandering curve to leave the image
    t = np.arange(-half, half + spacing_px, spacing_px)
    if curved:
        # heading(t) = theta0 + sum a_k sin(2 pi t / L_k + phi_k); curvature = d heading / dt
        # is at most sum a_k 2 pi / L_k, kept below 1 / min_radius_px.
        lengths = rng.uniform(60.0, 200.0, size=2)
        weights = rng.dirichlet([1.0, 1.0])
        amps = weights * lengths / (2 * np.pi * min_radius_px)
        amps = np.minimum(amps, 0.9)  # at most ~50 degrees of wander per term
        phases = rng.uniform(0, 2 * np.pi, size=2)
        heading = theta0 + sum(
            a * np.sin(2 * np.pi * t / L + p) for a, L, p in zip(amps, lengths, phases)
        )
    else:
        heading = np.full(t.shape, theta0)
    # Integrate the heading; direction (row, col) = (-sin, cos): angle counter-clockwise on screen.
    d_r = -np.sin(heading) * spacing_px
    d_c = np.cos(heading) * spacing_px
    path = np.column_stack([np.cumsum(d_r), np.cumsum(d_c)])
    mid = np.argmin(np.abs(t))
    centre = np.array([rows / 2, cols / 2]) - 0.5 + rng.uniform(-0.15, 0.15, 2) * [rows, cols]
    path += centre - path[mid]
    inside = (
        (path[:, 0] > -8) & (path[:, 0] < rows + 7) & (path[:, 1] > -8) & (path[:, 1] < cols + 7)
    )
    idx = np.nonzero(inside)[0]
    if idx.size == 0:
        raise ValueError(f"shape {shape}: the centreline missed the image; use a larger shape.")
    # Keep the one contiguous run through the middle point (a curve may leave and re-enter).
    breaks = np.nonzero(np.diff(idx) > 1)[0]
    runs = np.split(idx, breaks + 1)
    run = next((r for r in runs if r[0] <= mid <= r[-1]), max(runs, key=len))
    return path[run[0] : run[-1] + 1]


def random_width_profile(
    centreline_rc: ArrayLike,
    *,
    rng: np.random.Generator,
    kind: WidthKind,
    width_range_px: tuple[float, float] = (0.5, 12.0),
    correlation_px: float = 40.0,
) -> NDArray[np.float64]:
    """Width of the crack at each centreline point.

    Parameters
    ----------
    centreline_rc : ndarray of shape (n, 2), float, pixels
    rng : numpy Generator
    kind : {'constant', 'varying'}
        'constant': one width, log-uniform in ``width_range_px``. 'varying': a smooth random
        variation (log-width interpolated between control points ``correlation_px`` apart) over
        a random sub-range at least a factor 2 wide (where ``width_range_px`` allows).
    width_range_px : (float, float)
        Smallest and largest width (pixels).
    correlation_px : float
        Distance between control points of a varying width (pixels).

    Returns
    -------
    width_px : ndarray of shape (n,), float64, pixels
    """
    pts = np.asarray(centreline_rc, dtype=np.float64)
    lo, hi = np.log(width_range_px[0]), np.log(width_range_px[1])
    if kind == "constant":
        return np.full(len(pts), np.exp(rng.uniform(lo, hi)))
    if kind != "varying":
        raise ValueError(f"kind is {kind!r}; expected 'constant' or 'varying'.")
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    span = max(np.log(2.0), rng.uniform(0.3, 1.0) * (hi - lo))
    span = min(span, hi - lo)
    a = rng.uniform(lo, hi - span)
    n_ctrl = max(2, int(np.ceil(arc[-1] / correlation_px)) + 1)
    knots = np.linspace(0.0, arc[-1], n_ctrl)
    values = rng.uniform(a, a + span, n_ctrl)
    # Monotone-free smooth interpolation: a cubic-ish blend via a smoothed linear interpolant.
    log_w = np.interp(arc, knots, values)
    step = arc[1] - arc[0] if len(arc) > 1 else 1.0
    log_w = ndimage.gaussian_filter1d(log_w, correlation_px / 4 / max(step, 1e-9), mode="nearest")
    return np.exp(np.clip(log_w, lo, hi))


def _unit_normals(pts: NDArray[np.float64]) -> NDArray[np.float64]:
    """Unit normals (row, col) of a dense polyline, from central differences."""
    tangent = np.gradient(pts, axis=0)
    tangent /= np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-12)[:, None]
    return np.column_stack([-tangent[:, 1], tangent[:, 0]])


def _band_coverage(
    shape: tuple[int, int],
    pts: NDArray[np.float64],
    width_px: NDArray[np.float64],
    supersample: int,
) -> NDArray[np.float32]:
    """Fine-grid coverage of the band ``|distance to centreline| <= width / 2``.

    Each fine pixel (``supersample`` per image pixel) gets ``clip((w/2 - d) S + 1/2, 0, 1)``,
    with ``d`` the exact distance (image pixels) from its centre to the polyline and ``w`` the
    width interpolated at the closest point. The nearest polyline vertex comes from an EDT on
    the fine grid; the exact distance is then taken to the two segments at that vertex.
    """
    s = supersample
    fine_shape = (shape[0] * s, shape[1] * s)
    # Fine pixel (i, j) has its centre at image coordinate (i + 0.5) / s - 0.5.
    seeds_f = np.round((pts + 0.5) * s - 0.5).astype(np.int64)
    ok = (
        (seeds_f[:, 0] >= 0)
        & (seeds_f[:, 0] < fine_shape[0])
        & (seeds_f[:, 1] >= 0)
        & (seeds_f[:, 1] < fine_shape[1])
    )
    coverage = np.zeros(fine_shape, dtype=np.float32)
    if not ok.any():
        return coverage
    index_img = np.full(fine_shape, -1, dtype=np.int64)
    index_img[seeds_f[ok, 0], seeds_f[ok, 1]] = np.nonzero(ok)[0]
    dist_f, (near_r, near_c) = ndimage.distance_transform_edt(index_img < 0, return_indices=True)
    reach_f = (width_px.max() / 2 + 2.0) * s
    band = dist_f <= reach_f
    fr, fc = np.nonzero(band)
    j = index_img[near_r[fr, fc], near_c[fr, fc]]
    q = np.column_stack([(fr + 0.5) / s - 0.5, (fc + 0.5) / s - 0.5])
    best_d = np.full(fr.size, np.inf)
    best_w = np.zeros(fr.size)
    n = len(pts)
    for k0 in (-2, -1, 0, 1):  # segments (j+k0, j+k0+1) around the nearest vertex
        a_i = np.clip(j + k0, 0, n - 2)
        a, b = pts[a_i], pts[a_i + 1]
        ab = b - a
        t = np.clip(((q - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-12), 0.0, 1.0)
        d = np.hypot(*(q - a - t[:, None] * ab).T)
        w = width_px[a_i] * (1 - t) + width_px[a_i + 1] * t
        better = d < best_d
        best_d[better] = d[better]
        best_w[better] = w[better]
    coverage[fr, fc] = np.clip((best_w / 2 - best_d) * s + 0.5, 0.0, 1.0)
    return coverage


def _to_bands(texture: ArrayLike) -> tuple[NDArray[np.float64], bool]:
    """``texture`` as float64 (bands, H, W) and whether it was a single 2-D band."""
    t = np.asarray(texture, dtype=np.float64)
    if t.ndim == 2:
        return t[None], True
    if t.ndim == 3:
        return t, False
    raise ValueError(f"texture has shape {t.shape}; expected (H, W) or (bands, H, W).")


def render_coverage(
    texture: ArrayLike,
    coverage_fine: ArrayLike,
    *,
    supersample: int,
    psf_sigma_px: float,
    contrast: float,
    noise_sd: float,
    jpeg_quality: int | None,
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    """Render a crack, given as fine-grid coverage, onto a texture.

    Parameters
    ----------
    texture : ndarray of shape (H, W) or (bands, H, W), grey levels in [0, 255]
        The intact wall. One or three bands.
    coverage_fine : ndarray of shape (H * supersample, W * supersample), float in [0, 1]
        Fraction of each fine pixel inside the crack.
    supersample : int
        Fine pixels per image pixel along each axis.
    psf_sigma_px : float
        Standard deviation of the Gaussian PSF (image pixels), applied on the fine grid.
    contrast : float in (0, 1]
        The crack darkens the wall to ``1 - contrast`` of its brightness.
    noise_sd : float
        Standard deviation of additive Gaussian noise (grey levels), after the blur.
    jpeg_quality : int or None
        JPEG quality (1-95) of a compress-decompress round trip; None: no JPEG.
    rng : numpy Generator

    Returns
    -------
    image : ndarray of shape (H, W) or (bands, H, W), float32, grey levels in [0, 255]
    """
    bands, single = _to_bands(texture)
    _, h, w = bands.shape
    s = int(supersample)
    cov = np.asarray(coverage_fine, dtype=np.float64)
    if cov.shape != (h * s, w * s):
        raise ValueError(
            f"coverage_fine has shape {cov.shape}; expected {(h * s, w * s)} "
            f"(the texture's {h} x {w} times supersample={s})."
        )
    fine_coords = (np.arange(h * s) + 0.5) / s - 0.5, (np.arange(w * s) + 0.5) / s - 0.5
    grid = np.meshgrid(*fine_coords, indexing="ij")
    transmission = 1.0 - float(contrast) * cov
    out = np.empty((len(bands), h, w))
    for i, band in enumerate(bands):
        fine = ndimage.map_coordinates(band, grid, order=1, mode="nearest") * transmission
        if psf_sigma_px > 0:
            fine = ndimage.gaussian_filter(fine, psf_sigma_px * s, mode="reflect", truncate=4.0)
        out[i] = fine.reshape(h, s, w, s).mean(axis=(1, 3))
    if noise_sd > 0:
        out += rng.normal(0.0, noise_sd, out.shape)
    out = np.clip(out, 0.0, 255.0)
    if jpeg_quality is not None:
        out = _jpeg_round_trip(out, int(jpeg_quality))
    image = out.astype(np.float32)
    return image[0] if single else image


def _jpeg_round_trip(bands: NDArray[np.float64], quality: int) -> NDArray[np.float64]:
    """Compress (bands, H, W) grey levels to JPEG in memory and decode them again."""
    from PIL import Image

    u8 = np.round(bands).astype(np.uint8)
    if len(u8) == 1:
        img = Image.fromarray(u8[0], mode="L")
    elif len(u8) == 3:
        img = Image.fromarray(np.moveaxis(u8, 0, -1), mode="RGB")
    else:
        raise ValueError(f"JPEG needs 1 or 3 bands; got {len(u8)}.")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    dec = np.asarray(Image.open(buf), dtype=np.float64)
    return dec[None] if dec.ndim == 2 else np.moveaxis(dec, -1, 0)


def render_crack(
    texture: ArrayLike,
    centreline_rc: ArrayLike,
    width_px: ArrayLike,
    *,
    psf_sigma_px: float,
    contrast: float,
    noise_sd: float = 2.0,
    jpeg_quality: int | None = 90,
    supersample: int = 5,
    rng: np.random.Generator,
) -> SyntheticCrack:
    """Render a crack band of known width along a centreline onto a texture.

    Parameters
    ----------
    texture : ndarray of shape (H, W) or (bands, H, W), grey levels in [0, 255]
        The intact wall (e.g. a crop of a real façade photo, or ``skimage.data.brick()``).
    centreline_rc : ndarray of shape (n, 2), float, pixels
        Dense centreline points (spacing well under a pixel, e.g. from
        :func:`random_centreline`); pixel centres at integer coordinates.
    width_px : float or ndarray of shape (n,), float, pixels
        True width at each point (e.g. from :func:`random_width_profile`).
    psf_sigma_px : float
        Gaussian PSF standard deviation (pixels), typically 0.5-1.2.
    contrast : float in (0, 1]
        Darkening fraction of the crack (0.2-0.8 typical).
    noise_sd : float
        Additive Gaussian noise (grey levels).
    jpeg_quality : int or None
        JPEG quality, None for no compression.
    supersample : int
        Fine pixels per image pixel for the exact coverage.
    rng : numpy Generator

    Returns
    -------
    SyntheticCrack
    """
    pts = np.asarray(centreline_rc, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
        raise ValueError(f"centreline_rc has shape {pts.shape}; expected (n >= 2, 2).")
    w = np.broadcast_to(np.asarray(width_px, dtype=np.float64), (len(pts),)).copy()
    bands, _ = _to_bands(texture)
    shape = bands.shape[1:]
    cov_fine = _band_coverage(shape, pts, w, supersample)
    image = render_coverage(
        texture,
        cov_fine,
        supersample=supersample,
        psf_sigma_px=psf_sigma_px,
        contrast=contrast,
        noise_sd=noise_sd,
        jpeg_quality=jpeg_quality,
        rng=rng,
    )
    s = supersample
    coverage = cov_fine.reshape(shape[0], s, shape[1], s).mean(axis=(1, 3)).astype(np.float32)
    return SyntheticCrack(
        image=image,
        centreline_rc=pts,
        width_px=w,
        normal_rc=_unit_normals(pts),
        coverage=coverage,
        mask=coverage >= 0.5,
        psf_sigma_px=float(psf_sigma_px),
        contrast=float(contrast),
        noise_sd=float(noise_sd),
        jpeg_quality=jpeg_quality,
    )


def geometry_from_crack_map(
    crack_map: ArrayLike, *, factor: int
) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float64]]:
    """Fine coverage and ground-truth widths of a binary crack map drawn ``factor`` times finer.

    The map (True on crack) is used as the fine grid of :func:`render_coverage` with
    ``supersample=factor``. Ground truth is taken on the map's skeleton: the local width is
    twice the distance from the centreline to the crack edge, i.e. ``2 * EDT - 1`` map pixels at
    a skeleton pixel (the EDT runs from pixel centre to the first background pixel centre, half
    a pixel beyond the edge), divided by ``factor``.

    Parameters
    ----------
    crack_map : ndarray of shape (H * factor, W * factor), bool
        Binary crack map; crop it so that both sides are multiples of ``factor``.
    factor : int
        Map pixels per image pixel.

    Returns
    -------
    coverage_fine : ndarray of shape (H * factor, W * factor), float32 in {0, 1}
    skeleton_rc : ndarray of shape (n, 2), float64, image pixels
        Skeleton points of the map in image pixel coordinates.
    width_px : ndarray of shape (n,), float64, image pixels
        True width at each skeleton point.
    """
    from skimage.morphology import skeletonize

    m = np.asarray(crack_map, dtype=bool)
    if m.shape[0] % factor or m.shape[1] % factor:
        raise ValueError(
            f"crack_map has shape {m.shape}; both sides must be multiples of {factor}."
        )
    skel = skeletonize(m)
    edt = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    r, c = np.nonzero(skel)
    width = (2.0 * edt[r, c] - 1.0) / factor
    rc = np.column_stack([(r + 0.5) / factor - 0.5, (c + 0.5) / factor - 0.5])
    return m.astype(np.float32), rc, width


def random_wall_crop(
    texture: ArrayLike,
    shape: tuple[int, int],
    *,
    rng: np.random.Generator,
    wall_mask: ArrayLike | None = None,
    min_wall_fraction: float = 0.95,
    max_range: float = 80.0,
    min_mean: float = 60.0,
    max_tries: int = 200,
) -> NDArray[np.float64] | None:
    """A random crop of a façade photo that looks like plain wall, or None if none is found.

    A crop qualifies when at least ``min_wall_fraction`` of it is wall (if ``wall_mask`` is
    given, e.g. a façade label map's building class), its mean grey level is at least
    ``min_mean`` and its 2-98 percentile range at most ``max_range`` grey levels (no window,
    sign, shadow edge or sky).

    Parameters
    ----------
    texture : ndarray of shape (H, W) or (bands, H, W), grey levels in [0, 255]
    shape : (rows, cols)
        Crop size.
    rng : numpy Generator
    wall_mask : ndarray of shape (H, W), bool, optional

    Returns
    -------
    crop : ndarray of shape (rows, cols) or (bands, rows, cols), float64, or None
    """
    t = np.asarray(texture, dtype=np.float64)
    grey = t if t.ndim == 2 else t.mean(axis=0)
    h, w = grey.shape
    rows, cols = shape
    if h < rows or w < cols:
        return None
    mask = None if wall_mask is None else np.asarray(wall_mask, dtype=bool)
    for _ in range(max_tries):
        r = int(rng.integers(0, h - rows + 1))
        c = int(rng.integers(0, w - cols + 1))
        g = grey[r : r + rows, c : c + cols]
        if mask is not None and mask[r : r + rows, c : c + cols].mean() < min_wall_fraction:
            continue
        lo, hi = np.percentile(g, [2, 98])
        if g.mean() >= min_mean and hi - lo <= max_range:
            return t[..., r : r + rows, c : c + cols].copy()
    return None


def skeleton_samples(
    centreline_rc: ArrayLike,
    width_px: ArrayLike,
    normal_rc: ArrayLike,
    shape: tuple[int, int],
    *,
    rng: np.random.Generator,
    spacing_px: float = 1.0,
    jitter_px: float = 0.5,
    margin_px: float = 2.0,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Skeleton-like samples of a true centreline: one per ``spacing_px``, off by a skeleton's error.

    Each sample is the true centreline point moved along the normal by Gaussian noise of
    ``jitter_px`` and rounded to the nearest pixel (a skeleton is made of whole pixels);
    duplicates are dropped and samples within ``margin_px`` of the border left out.

    Returns
    -------
    rows, cols : ndarray of shape (n,), int64, pixels
    true_width_px : ndarray of shape (n,), float64, pixels
        True width at the centreline point each sample came from.
    """
    pts = np.asarray(centreline_rc, dtype=np.float64)
    wid = np.asarray(width_px, dtype=np.float64)
    nrm = np.asarray(normal_rc, dtype=np.float64)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    take = np.searchsorted(arc, np.arange(0.0, arc[-1], spacing_px))
    off = rng.normal(0.0, jitter_px, take.size) if jitter_px > 0 else np.zeros(take.size)
    rc = np.round(pts[take] + nrm[take] * off[:, None]).astype(np.int64)
    inside = (
        (rc[:, 0] >= margin_px)
        & (rc[:, 0] < shape[0] - margin_px)
        & (rc[:, 1] >= margin_px)
        & (rc[:, 1] < shape[1] - margin_px)
    )
    rc, take = rc[inside], take[inside]
    _, first = np.unique(rc[:, 0] * (shape[1] + 1) + rc[:, 1], return_index=True)
    first = np.sort(first)
    return rc[first, 0], rc[first, 1], wid[take[first]]
