"""Training samples from the corrections of a survey: targets rasterised from the edits.

For each image window of :class:`~cracksurvey.train.edits.ImageEdits`, in its pixel frame
(pixel (row, col) covers ``[col, col + 1) x [row, row + 1)``):

- centreline: each vertex falls in one pixel; consecutive vertices' pixels are joined by
  Bresenham lines (``skimage.draw.line``): a one-pixel-wide, 8-connected line;
- crack body and reviewed areas: the pixels whose centre lies inside the polygon (the line
  buffered by half its width in pixels, round ends; the reviewed polygon), plus the centreline
  for the body; images in pixel units (no scale) have no width in millimetres: their crack body
  is the centreline;
- distance: :func:`cracksurvey.train.targets.distance_target` of the centreline (clipped).

:class:`SurveySource` draws training crops that lie entirely inside reviewed areas, so nothing
unchecked is ever taught; reviewed pixels far from any line are the negatives. Pure: the image
pixels come from :func:`cracksurvey.io.edits.read_image_window`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray

from ..errors import DatasetError
from .edits import ImageEdits, Window
from .targets import distance_target

__all__ = [
    "SurveySample",
    "SurveySource",
    "build_sample",
    "rasterize_areas",
    "rasterize_centrelines",
    "rasterize_crack_body",
    "sample_counts",
    "target_classes",
]

#: Classes of a sample's target raster (:func:`target_classes`).
TARGET_NEGATIVE, TARGET_BODY, TARGET_CENTRELINE, TARGET_UNREVIEWED = 0, 1, 2, 255


def _lines(geometry: Any) -> list[shapely.LineString]:
    parts = shapely.get_parts(np.asarray([geometry], dtype=object))
    return [p for p in parts if isinstance(p, shapely.LineString) and not p.is_empty]


def rasterize_centrelines(lines_px: Sequence[Any], shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Burn crack centrelines, one pixel wide and 8-connected.

    Parameters
    ----------
    lines_px : sequence of shapely (Multi)LineString
        In pixel coordinates (x = col, y = row); parts outside the raster are clipped.
    shape : (rows, cols)

    Returns
    -------
    ndarray of shape (rows, cols), bool

    Examples
    --------
    >>> line = shapely.LineString([(1.5, 2.5), (4.5, 2.5)])
    >>> np.argwhere(rasterize_centrelines([line], (4, 6))).tolist()
    [[2, 1], [2, 2], [2, 3], [2, 4]]
    """
    from skimage.draw import line as draw_line

    rows, cols = shape
    out = np.zeros(shape, bool)
    frame = shapely.box(0, 0, cols, rows)
    for geometry in lines_px:
        for part in _lines(shapely.intersection(geometry, frame)):
            xy = shapely.get_coordinates(part)
            c = np.clip(np.floor(xy[:, 0]).astype(np.int64), 0, cols - 1)
            r = np.clip(np.floor(xy[:, 1]).astype(np.int64), 0, rows - 1)
            out[r[0], c[0]] = True
            for r0, c0, r1, c1 in zip(r[:-1], c[:-1], r[1:], c[1:]):
                rr, cc = draw_line(int(r0), int(c0), int(r1), int(c1))
                out[rr, cc] = True
    return out


def rasterize_areas(polygons_px: Sequence[Any], shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Pixels whose centre lies inside any of the polygons (pixel coordinates).

    >>> square = shapely.box(1, 1, 3, 2)
    >>> rasterize_areas([square], (3, 4)).astype(int).tolist()
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    from rasterio.features import rasterize

    shapes = [(g, 1) for g in polygons_px if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(shape, bool)
    burnt = rasterize(
        shapes,
        out_shape=shape,
        transform=Affine.identity(),
        fill=0,
        dtype="uint8",
        all_touched=False,
    )
    return burnt.astype(bool)


def rasterize_crack_body(
    lines_px: Sequence[Any],
    widths_px: Sequence[float] | NDArray[np.float64],
    shape: tuple[int, int],
) -> NDArray[np.bool_]:
    """Crack body: each line buffered by half its width (round ends), plus the centreline.

    A NaN width (pixel units) or a width under a pixel gives the centreline alone.
    """
    tubes = [
        shapely.buffer(line, float(w) / 2)
        for line, w in zip(lines_px, widths_px)
        if math.isfinite(w) and w > 0
    ]
    return rasterize_areas(tubes, shape) | rasterize_centrelines(lines_px, shape)


# --------------------------------------------------------------------------------------------
# Samples and the crop source
# --------------------------------------------------------------------------------------------
@dataclass
class SurveySample:
    """One image window of an edited survey, with its targets.

    Attributes
    ----------
    name : str
        ``<survey>/<image>``.
    window : (row0, row1, col0, col1)
        Where the arrays lie in the image (pixels).
    image : ndarray of shape (3, H, W), uint8
    distance : ndarray of shape (H, W), float32
        Distance to the nearest centreline pixel (pixels), clipped.
    body : ndarray of shape (H, W), bool
        Crack body.
    centreline : ndarray of shape (H, W), bool
    reviewed : ndarray of shape (H, W), bool
        Reviewed and valid (not nodata): where crops may lie.
    """

    name: str
    window: Window
    image: NDArray[np.uint8]
    distance: NDArray[np.float32]
    body: NDArray[np.bool_]
    centreline: NDArray[np.bool_]
    reviewed: NDArray[np.bool_]


def build_sample(
    image: NDArray[np.uint8],
    valid: NDArray[np.bool_],
    edits: ImageEdits,
    *,
    clip_px: float = 20.0,
) -> SurveySample:
    """Targets of one edited image window.

    Parameters
    ----------
    image : ndarray of shape (3, H, W), uint8
        The window ``edits.window`` of the image, as the model sees it
        (:func:`cracksurvey.predict.prepare_bands`).
    valid : ndarray of shape (H, W), bool
        Pixels that are not nodata.
    edits : ImageEdits
    clip_px : float
        Clip value of the distance target (the model card's).
    """
    shape = edits.shape
    if image.shape[1:] != shape or valid.shape != shape:
        raise ValueError(f"image {image.shape} / valid {valid.shape} do not match window {shape}")
    centreline = rasterize_centrelines(edits.lines, shape)
    body = rasterize_crack_body(edits.lines, edits.widths_px, shape)
    reviewed = rasterize_areas(edits.reviewed, shape) & valid
    return SurveySample(
        name=f"{edits.survey}/{edits.image}",
        window=edits.window,
        image=np.ascontiguousarray(image, dtype=np.uint8),
        distance=distance_target(centreline, clip_px=clip_px),
        body=body,
        centreline=centreline,
        reviewed=reviewed,
    )


def target_classes(sample: SurveySample) -> NDArray[np.uint8]:
    """The sample's targets as one class raster (what training sees; written for QGIS).

    0 reviewed, no crack; 1 crack body; 2 centreline; 255 not reviewed (never trained on).
    """
    classes = np.full(sample.reviewed.shape, TARGET_UNREVIEWED, np.uint8)
    classes[sample.reviewed] = TARGET_NEGATIVE
    classes[sample.reviewed & sample.body] = TARGET_BODY
    classes[sample.reviewed & sample.centreline] = TARGET_CENTRELINE
    return classes


def _window_sums(mask: NDArray[np.bool_], size: int) -> NDArray[np.int64]:
    """Sum of ``mask`` over every ``size`` x ``size`` window (top-left indexed)."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    table[1:, 1:] = mask.cumsum(0).cumsum(1)
    return table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]


@dataclass
class SurveySource:
    """Training crops that lie entirely inside reviewed areas.

    A crop is centred on a crack with probability ``crack_share`` (a crop position whose
    window holds a centreline pixel), else drawn among every position; the sample is drawn in
    proportion to its number of such positions. Follows the crop-source protocol of
    :class:`cracksurvey.train.data.MixedCrops`.
    """

    samples: list[SurveySample]
    crack_share: float = 0.5
    _positions: dict[int, list[tuple[NDArray[np.int64], NDArray[np.int64]]]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __len__(self) -> int:
        return len(self.samples)

    def positions(self, crop_px: int) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
        """Per sample: flat indices of all crop positions, and of those holding a crack."""
        if crop_px not in self._positions:
            found = []
            for s in self.samples:
                if min(s.reviewed.shape) < crop_px:
                    found.append((np.zeros(0, np.int64), np.zeros(0, np.int64)))
                    continue
                inside = _window_sums(s.reviewed, crop_px) == crop_px * crop_px
                crack = inside & (_window_sums(s.centreline & s.reviewed, crop_px) > 0)
                found.append((np.flatnonzero(inside), np.flatnonzero(crack)))
            self._positions[crop_px] = found
        return self._positions[crop_px]

    def check(self, crop_px: int) -> int:
        """Number of crop positions; raises when there is none."""
        n = sum(all_.size for all_, _ in self.positions(crop_px))
        if n == 0:
            largest = max((_largest_square(s.reviewed) for s in self.samples), default=0)
            raise DatasetError(
                f"no reviewed area holds a {crop_px} x {crop_px} pixel crop (the largest holds "
                f"{largest} x {largest}); draw larger reviewed polygons or pass a smaller "
                "--crop-px (a multiple of 32)"
            )
        return n

    def crop(
        self, crop_px: int, rng: np.random.Generator
    ) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.bool_]]:
        positions = self.positions(crop_px)
        n_crack = np.array([c.size for _, c in positions], np.float64)
        use_crack = n_crack.sum() > 0 and rng.random() < self.crack_share
        weights = n_crack if use_crack else np.array([a.size for a, _ in positions], np.float64)
        k = int(rng.choice(len(self.samples), p=weights / weights.sum()))
        pool = positions[k][1 if use_crack else 0]
        sample = self.samples[k]
        cols = sample.reviewed.shape[1] - crop_px + 1
        r0, c0 = divmod(int(pool[int(rng.integers(pool.size))]), cols)
        rr, cc = slice(r0, r0 + crop_px), slice(c0, c0 + crop_px)
        return sample.image[:, rr, cc], sample.distance[rr, cc], sample.body[rr, cc]


def _largest_square(mask: NDArray[np.bool_]) -> int:
    """Side of the largest all-True square of a mask (doubling, then bisection)."""
    if not mask.any():
        return 0
    lo, hi = 1, min(mask.shape)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if (_window_sums(mask, mid) == mid * mid).any():
            lo = mid
        else:
            hi = mid - 1
    return lo


def sample_counts(samples: Sequence[SurveySample], *, clip_px: float) -> dict[str, int]:
    """Pixel counts of the samples: reviewed, centreline and body in reviewed areas, and
    negatives (reviewed pixels farther than ``clip_px`` from any crack)."""
    return {
        "images": len(samples),
        "reviewed_px": int(sum(s.reviewed.sum() for s in samples)),
        "centreline_px": int(sum((s.centreline & s.reviewed).sum() for s in samples)),
        "body_px": int(sum((s.body & s.reviewed).sum() for s in samples)),
        "negative_px": int(sum((s.reviewed & (s.distance >= clip_px)).sum() for s in samples)),
    }
