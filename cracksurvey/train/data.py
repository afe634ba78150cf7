"""Training data: labelled images held in memory, random native-resolution crops, augmentations.

Targets are built once per image on the full mask (skeleton → clipped EDT, docs/method.md
"Targets", D1-D3) and cropped with the image, so a crop near a crack that lies just outside it still
gets the right distances. Images smaller than the crop are reflect-padded (image and targets).

Augmentations follow the authors' list (docs/method.md, D9: flips, then fixed-factor brightness 0.5, contrast 0.4,
gamma 1.4, greyscale, each with its own probability); ``rot90`` is our addition (cracks have no
preferred orientation), configurable like the others.

Sampling is driven by a ``numpy.random.Generator`` passed in by the caller, so an epoch seeded
from (seed, epoch) is reproduced exactly on ``--resume``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy import ndimage

from ..errors import DatasetError
from ..evaluation.datasets import list_pairs, read_mask, read_rgb
from .targets import distance_target, skeletonize_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Augment:
    """Probabilities of each augmentation (0 disables it)."""

    hflip: float = 0.5
    vflip: float = 0.5
    rot90: float = 0.5
    brightness: float = 0.5
    contrast: float = 0.5
    gamma: float = 0.5
    greyscale: float = 0.5
    brightness_factor: float = 0.5
    contrast_factor: float = 0.4
    gamma_value: float = 1.4


NO_AUGMENT = Augment(0, 0, 0, 0, 0, 0, 0)


@dataclass
class Sample:
    """One labelled image in memory.

    image : uint8 (3, H, W); distance : float32 (H, W) px; body : bool (H, W) crack body mask.
    """

    name: str
    dataset: str
    image: np.ndarray
    distance: np.ndarray
    body: np.ndarray


def load_samples(root: str | Path, split: str, *, clip_px: float = 20.0) -> list[Sample]:
    """Read every pair of a split and build its targets."""
    samples = []
    for pair in list_pairs(root, split):
        image = read_rgb(pair.image)
        mask = read_mask(pair.mask)
        if mask.shape != image.shape[1:] and mask.shape == image.shape[2:0:-1]:
            # a photo stored rotated (EXIF orientation) whose mask was drawn on it upright, as
            # annotation tools show it: the mask cannot lie on the stored grid, so turn the image
            turned = read_rgb(pair.image, upright=True)
            if turned.shape[1:] == mask.shape:
                log.info("%s: read upright (EXIF orientation) to match its mask", pair.image)
                image = turned
        if mask.shape != image.shape[1:]:
            raise DatasetError(
                f"{pair.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{image.shape[2]}x{image.shape[1]}; masks must match their images (no resizing, docs/method.md D3)"
            )
        skeleton = skeletonize_mask(mask)
        samples.append(
            Sample(pair.name, pair.dataset, image, distance_target(skeleton, clip_px=clip_px), mask)
        )
    return samples


def _pad_to(arr: np.ndarray, rows: int, cols: int) -> np.ndarray:
    pr = max(0, rows - arr.shape[-2])
    pc = max(0, cols - arr.shape[-1])
    if pr == 0 and pc == 0:
        return arr
    pad = [(0, 0)] * (arr.ndim - 2) + [(0, pr), (0, pc)]
    return np.pad(arr, pad, mode="symmetric")


def random_crop(
    sample: Sample, crop_px: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random crop of image, distance and body at native resolution."""
    image = _pad_to(sample.image, crop_px, crop_px)
    distance = _pad_to(sample.distance, crop_px, crop_px)
    body = _pad_to(sample.body, crop_px, crop_px)
    r0 = int(rng.integers(0, image.shape[1] - crop_px + 1))
    c0 = int(rng.integers(0, image.shape[2] - crop_px + 1))
    win = (slice(r0, r0 + crop_px), slice(c0, c0 + crop_px))
    return image[(slice(None), win[0], win[1])], distance[win], body[win]


def augment(
    image: np.ndarray,
    distance: np.ndarray,
    body: np.ndarray,
    aug: Augment,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply §3.4 augmentations. ``image`` uint8 (3, H, W) in, float32 in [0, 1] out."""
    draws = rng.random(7)
    if draws[0] < aug.hflip:
        image, distance, body = image[:, :, ::-1], distance[:, ::-1], body[:, ::-1]
    if draws[1] < aug.vflip:
        image, distance, body = image[:, ::-1], distance[::-1], body[::-1]
    if draws[2] < aug.rot90:
        image, distance, body = (
            np.rot90(image, 1, (1, 2)),
            np.rot90(distance, 1),
            np.rot90(body, 1),
        )
    img = image.astype(np.float32) / 255.0
    if draws[3] < aug.brightness:
        img = np.clip(img * aug.brightness_factor, 0, 1)
    if draws[4] < aug.contrast:
        grey_mean = float((0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]).mean())
        img = np.clip(aug.contrast_factor * img + (1 - aug.contrast_factor) * grey_mean, 0, 1)
    if draws[5] < aug.gamma:
        img = img**aug.gamma_value
    if draws[6] < aug.greyscale:
        grey = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
        img = np.repeat(grey[None], 3, 0)
    return (
        np.ascontiguousarray(img, np.float32),
        np.ascontiguousarray(distance, np.float32),
        np.ascontiguousarray(body),
    )


class CropSource(Protocol):
    """Anything that yields training crops: image uint8 (3, c, c), distance (c, c), body (c, c)."""

    def crop(
        self, crop_px: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass
class LabelledSource:
    """Labelled images (a dataset split): an image uniformly, then a crop position."""

    samples: list[Sample]

    def crop(
        self, crop_px: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sample = self.samples[int(rng.integers(len(self.samples)))]
        return random_crop(sample, crop_px, rng)

    def __len__(self) -> int:
        return len(self.samples)


@dataclass
class MixedCrops:
    """Random crops from several sources mixed with weights.

    Each crop first draws a source with probability proportional to its weight, then the source
    draws the crop (for a labelled dataset: an image uniformly, then a crop position). A plain
    list of :class:`Sample` is a labelled source.
    """

    sources: Sequence[CropSource | list[Sample]]
    weights: Sequence[float]
    crop_px: int = 256
    aug: Augment = field(default_factory=Augment)

    def __post_init__(self) -> None:
        if not self.sources or any(len(s) == 0 for s in self.sources):  # type: ignore[arg-type]
            raise DatasetError("every training dataset must have at least one image")
        self._sources: list[CropSource] = [
            LabelledSource(s) if isinstance(s, list) else s for s in self.sources
        ]
        w = np.asarray(self.weights, float)
        self._p = w / w.sum()

    def batch(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images float32 (n,3,c,c) in [0,1], distance (n,1,c,c), body float32 (n,1,c,c))."""
        images, dists, bodies = [], [], []
        for _ in range(n):
            src = self._sources[int(rng.choice(len(self._sources), p=self._p))]
            img, dist, body = augment(*src.crop(self.crop_px, rng), self.aug, rng)
            images.append(img)
            dists.append(dist)
            bodies.append(body)
        return (
            np.stack(images),
            np.stack(dists)[:, None],
            np.stack(bodies)[:, None].astype(np.float32),
        )


def pad_to_multiple(image: np.ndarray, multiple: int = 32) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad (…, H, W) at bottom/right to multiples; returns the array and the original size."""
    h, w = image.shape[-2:]
    rows = -(-h // multiple) * multiple
    cols = -(-w // multiple) * multiple
    return _pad_to(image, rows, cols), (h, w)


def crack_body_width_px(body: np.ndarray) -> float:
    """Median stroke width (px) of a crack-body mask: 2 x EDT at skeleton pixels (diagnostic)."""
    sk = skeletonize_mask(body)
    if not sk.any():
        return 0.0
    return float(np.median(2 * ndimage.distance_transform_edt(body)[sk]))
