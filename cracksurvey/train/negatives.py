"""What is not a crack, and synthetic cracks on real walls: two extra training sources.

**Negatives.** Photos of intact façades teach the network that window frames, shutters, signs,
cornices, mortar joints and shadows are not cracks. A negative image has no crack anywhere: its
distance target is the clip value everywhere and its body target is empty, so every loss term
(MSE, Dice, TOPO's positive pass, body BCE) pushes false cracks away. Negatives are used at
several scales (a 4K street photo at 1/1, 1/2 and 1/4 of its resolution: the engine sees façades
at many ground sampling distances). *Hot spots* are pixels where an earlier model predicted a
crack (hard-negative mining): a share of the crops is centred near one of them.

**Synthetic cracks.** Real seismic crack patterns (binary crack maps traced on tested masonry
walls) are cut into *stamps*, scaled, and darkened into crops of intact façades. The target is
exact: the stamp's skeleton, scaled with the crack. This puts real crack geometry on the textures
a façade survey sees, which none of the labelled crack datasets shows.

Both sources are held in memory and sampled by a ``numpy.random.Generator`` (reproducible).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import DatasetError
from ..evaluation.datasets import IMAGE_SUFFIXES, read_rgb
from .targets import distance_target, skeletonize_mask

log = logging.getLogger(__name__)

# Validation parts of the negative sets, kept out of training (split by source set for
# labelmefacade, whose consecutive frames of one street are near-duplicates; by photo for spb).
LABELMEFACADE_VAL_SETS = (
    "static_boston_street_april",
    "static_outdoor_urban_city_street_boston",
    "static_outdoor_street_city_barcelona_spain_night",
    "static_outdoor_street_city_gerona_spain",
)
SPB_VAL_IMAGES = ("train_img_13", "train_img_250", "train_img_7")
# labelmefacade label colours (R, G, B) -> façade class: 0 wall, 1 opening, 2 background, 255 ignore
LABELMEFACADE_CLASSES = {
    (128, 0, 0): 0,  # building -> wall
    (0, 0, 128): 1,  # window -> opening
    (128, 128, 0): 1,  # door -> opening
    (0, 128, 128): 2,  # sky
    (0, 128, 0): 2,  # vegetation
    (128, 0, 128): 2,  # car
    (128, 64, 0): 2,  # road
    (128, 128, 128): 2,  # pavement
    (0, 0, 0): 255,  # "various": unlabelled odds and ends, ignored
}


def negative_split(name: str, dataset: str) -> str:
    """'train' or 'val' for one negative image (by its file stem and dataset folder name)."""
    if dataset == "labelmefacade":
        return "val" if name.split("__")[0] in LABELMEFACADE_VAL_SETS else "train"
    if dataset == "spb_facades":
        return "val" if name in SPB_VAL_IMAGES else "train"
    return "train"


def list_negative_images(root: str | Path, split: str) -> list[Path]:
    """Images of one negative set (``<root>/images/*``) that belong to ``split``."""
    root = Path(root)
    folder = root / "images"
    if not folder.is_dir():
        raise DatasetError(f"{root}: expected an images/ folder of intact façade photos")
    files = [
        p
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES and negative_split(p.stem, root.name) == split
    ]
    if not files:
        raise DatasetError(f"{folder}: no {split} images")
    return files


@dataclass
class NegativeImage:
    """An intact image at one scale. image: uint8 (3, H, W); hot_spots: int (n, 2) row, col."""

    name: str
    image: np.ndarray
    hot_spots: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))


def downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Block-mean downscale of a uint8 (3, H, W) image by an integer factor (area average)."""
    if factor == 1:
        return image
    _, h, w = image.shape
    h2, w2 = h // factor, w // factor
    a = image[:, : h2 * factor, : w2 * factor].astype(np.float32)
    a = a.reshape(3, h2, factor, w2, factor).mean((2, 4))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def load_negatives(
    root: str | Path,
    split: str,
    *,
    scales: Sequence[int] = (1,),
    hot_spots: dict[str, np.ndarray] | None = None,
) -> list[NegativeImage]:
    """Negative images of a set at each integer downscale factor in ``scales``.

    ``hot_spots`` maps ``"<stem>@<factor>"`` to (n, 2) pixel positions at that scale.
    """
    out = []
    for path in list_negative_images(root, split):
        full = read_rgb(path)
        for f in scales:
            key = f"{path.stem}@{f}"
            spots = (hot_spots or {}).get(key, np.zeros((0, 2), np.int64))
            out.append(
                NegativeImage(
                    key, downscale(full, int(f)), np.asarray(spots, np.int64).reshape(-1, 2)
                )
            )
    return out


def brick_negative() -> NegativeImage:
    """scikit-image's brick-wall photo (CC0), grey replicated to RGB."""
    from skimage import data

    grey = data.brick()
    return NegativeImage("skimage-brick@1", np.repeat(grey[None], 3, 0).astype(np.uint8))


def negative_crop(
    neg: NegativeImage, crop_px: int, rng: np.random.Generator, *, hot_share: float = 0.5
) -> np.ndarray:
    """A crop of a negative image (uint8 (3, c, c)); near a hot spot with probability ``hot_share``."""
    image = neg.image
    _, h, w = image.shape
    if h < crop_px or w < crop_px:
        pr, pc = max(0, crop_px - h), max(0, crop_px - w)
        image = np.pad(image, ((0, 0), (0, pr), (0, pc)), mode="symmetric")
        _, h, w = image.shape
    if neg.hot_spots.shape[0] and rng.random() < hot_share:
        r, c = neg.hot_spots[int(rng.integers(neg.hot_spots.shape[0]))]
        r0 = int(
            np.clip(
                r - crop_px // 2 + rng.integers(-crop_px // 4, crop_px // 4 + 1), 0, h - crop_px
            )
        )
        c0 = int(
            np.clip(
                c - crop_px // 2 + rng.integers(-crop_px // 4, crop_px // 4 + 1), 0, w - crop_px
            )
        )
    else:
        r0 = int(rng.integers(0, h - crop_px + 1))
        c0 = int(rng.integers(0, w - crop_px + 1))
    return image[:, r0 : r0 + crop_px, c0 : c0 + crop_px]


# ---------------------------------------------------------------------------------------------
# Synthetic cracks from real crack maps


@dataclass
class CrackStamp:
    """A window of a binary crack map at full resolution: crack body and its skeleton (bool)."""

    body: np.ndarray
    skeleton: np.ndarray


def cut_stamps(
    crack_map: np.ndarray, *, stamp_px: int, n: int, rng: np.random.Generator
) -> list[CrackStamp]:
    """``n`` windows of ``stamp_px`` centred on random crack pixels of a binary map."""
    body = np.asarray(crack_map, bool)
    rows, cols = np.nonzero(body)
    if rows.size == 0:
        return []
    h, w = body.shape
    stamps = []
    for _ in range(n):
        k = int(rng.integers(rows.size))
        r0 = int(np.clip(rows[k] - stamp_px // 2, 0, max(0, h - stamp_px)))
        c0 = int(np.clip(cols[k] - stamp_px // 2, 0, max(0, w - stamp_px)))
        b = body[r0 : r0 + stamp_px, c0 : c0 + stamp_px]
        stamps.append(CrackStamp(b.copy(), skeletonize_mask(b)))
    return stamps


def save_stamps(stamps: Sequence[CrackStamp], path: str | Path) -> None:
    """Stamps as one compressed .npz (bit-packed)."""
    shape = stamps[0].body.shape
    np.savez_compressed(
        path,
        shape=np.array(shape),
        body=np.stack([np.packbits(s.body) for s in stamps]),
        skeleton=np.stack([np.packbits(s.skeleton) for s in stamps]),
    )


def load_stamps(path: str | Path) -> list[CrackStamp]:
    with np.load(path) as z:
        shape = tuple(int(v) for v in z["shape"])
        n = int(np.prod(shape))
        return [
            CrackStamp(
                np.unpackbits(b)[:n].reshape(shape).astype(bool),
                np.unpackbits(s)[:n].reshape(shape).astype(bool),
            )
            for b, s in zip(z["body"], z["skeleton"])
        ]


@dataclass(frozen=True)
class SyntheticStyle:
    """Ranges of the synthetic crack rendering."""

    scales: tuple[int, ...] = (1, 2, 3)  # map pixels per image pixel (block mean)
    widen_px: tuple[int, int] = (0, 3)  # dilate the full-resolution body by 0..k pixels
    widen_prob: float = 0.3
    contrast: tuple[float, float] = (0.25, 0.85)  # crack darkening: I * (1 - contrast * coverage)
    blur_sigma_px: tuple[float, float] = (0.4, 1.2)
    noise: tuple[float, float] = (0.0, 0.02)  # Gaussian noise sd, intensity in [0, 1]


def darken(
    background: np.ndarray, coverage: np.ndarray, rng: np.random.Generator, style: SyntheticStyle
) -> np.ndarray:
    """A uint8 (3, c, c) crop darkened where ``coverage`` (c, c) is: blurred, at a random
    contrast, with optional sensor noise (the ranges of ``style``)."""
    sigma = float(rng.uniform(*style.blur_sigma_px))
    shade = ndimage.gaussian_filter(coverage, sigma) * float(rng.uniform(*style.contrast))
    img = background.astype(np.float32) / 255.0 * (1.0 - shade)[None]
    noise_sd = float(rng.uniform(*style.noise))
    if noise_sd > 0:
        img = img + rng.normal(0.0, noise_sd, img.shape).astype(np.float32)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def render_synthetic_crack(
    background: np.ndarray,
    stamp: CrackStamp,
    rng: np.random.Generator,
    *,
    style: SyntheticStyle = SyntheticStyle(),
    clip_px: float = 20.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Darken a stamp's crack into a uint8 (3, c, c) background crop.

    Returns image uint8 (3, c, c), distance float32 (c, c) to the scaled skeleton (clipped) and
    body bool (c, c) (coverage >= 0.5, or the skeleton where the crack is thinner than a pixel).
    """
    crop_px = background.shape[-1]
    f = int(rng.choice(style.scales))
    body = stamp.body
    if rng.random() < style.widen_prob and style.widen_px[1] > 0:
        k = int(rng.integers(style.widen_px[0], style.widen_px[1] + 1))
        if k:
            body = ndimage.binary_dilation(body, iterations=k)
    size = stamp.body.shape[0] // f
    # random window of the stamp (in map pixels) that covers crop_px image pixels
    need = crop_px * f
    if size >= crop_px:
        r0 = int(rng.integers(0, stamp.body.shape[0] - need + 1))
        c0 = int(rng.integers(0, stamp.body.shape[1] - need + 1))
        win = (slice(r0, r0 + need), slice(c0, c0 + need))
        b = body[win]
        sk = stamp.skeleton[win]
    else:
        pad = need - stamp.body.shape[0]
        b = np.pad(body, ((0, pad), (0, pad)))
        sk = np.pad(stamp.skeleton, ((0, pad), (0, pad)))
    coverage = b.reshape(crop_px, f, crop_px, f).mean((1, 3)).astype(np.float32)
    skel = sk.reshape(crop_px, f, crop_px, f).any((1, 3))
    k = int(rng.integers(4))
    coverage, skel = np.rot90(coverage, k), np.rot90(skel, k)
    if rng.random() < 0.5:
        coverage, skel = coverage[:, ::-1], skel[:, ::-1]
    skel = skeletonize_mask(np.ascontiguousarray(skel))
    image = darken(background, coverage, rng, style)
    body_mask = (coverage >= 0.5) | skel
    return image, distance_target(skel, clip_px=clip_px), np.ascontiguousarray(body_mask)


#: Man-made line patterns (:func:`render_line_pattern`), each a family or two of straight lines.
LINE_PATTERNS = ("lattice", "grid", "parallel")


def render_line_pattern(
    background: np.ndarray,
    rng: np.random.Generator,
    *,
    kind: str | None = None,
    style: SyntheticStyle = SyntheticStyle(),
) -> tuple[np.ndarray, np.ndarray]:
    """Darken a man-made line pattern into a uint8 (3, c, c) background crop: not a crack.

    Railings, fences, grilles, rusticated joints, siding and cable bundles are regular: straight
    lines repeated at one spacing, crossing at one angle. A pattern is one of
    :data:`LINE_PATTERNS` — ``lattice`` (two families of parallel lines crossing at 40-140
    degrees, a diamond railing), ``grid`` (a horizontal and a vertical family, a grille or
    rusticated joints) or ``parallel`` (3-8 parallel lines, siding, fence bars, cables) — with
    lines 1-4 px wide, 10-48 px apart, in a random rectangle of the crop (a railing in front of
    part of a façade), darkened, blurred and contrasted as the synthetic cracks
    (:func:`render_synthetic_crack`), so that only the geometry tells the two apart.

    Returns image uint8 (3, c, c) and the pattern's centrelines as bool (c, c).
    """
    c = background.shape[-1]
    kind = kind or str(rng.choice(LINE_PATTERNS))
    if kind not in LINE_PATTERNS:
        raise ValueError(f"line pattern {kind!r}: expected one of {LINE_PATTERNS}")
    rows, cols = np.mgrid[0:c, 0:c].astype(np.float32) + 0.5
    spacing = float(rng.uniform(10.0, 48.0))
    half_w = float(rng.uniform(0.5, 2.0))
    if kind == "lattice":
        a = float(rng.uniform(0.0, np.pi))
        angles = [a, a + float(rng.uniform(np.radians(40), np.radians(140)))]
    elif kind == "grid":
        tilt = float(rng.normal(0.0, np.radians(3)))
        angles = [tilt, tilt + np.pi / 2]
    else:
        upright = rng.random() < 0.6  # mostly horizontal or vertical (siding, bars, cables)
        angles = [
            float(rng.choice([0.0, np.pi / 2]) + rng.normal(0.0, np.radians(3)))
            if upright
            else float(rng.uniform(0.0, np.pi))
        ]
    coverage = np.zeros((c, c), np.float32)
    centre = np.zeros((c, c), bool)
    for angle in angles:
        # signed distance along the family's normal, folded onto the nearest line
        t = rows * np.cos(angle) + cols * np.sin(angle) + float(rng.uniform(0.0, spacing))
        d = np.abs(t - spacing * np.round(t / spacing))
        if kind == "parallel":  # only a few lines of the family
            n_lines = int(rng.integers(3, 9))
            first = float(rng.uniform(-c / 2, c / 2 - n_lines * spacing))
            k = np.round(t / spacing) * spacing - (np.median(t) + first)
            d = np.where((k >= 0) & (k < n_lines * spacing), d, np.inf)
        coverage = np.maximum(coverage, np.clip(half_w + 0.5 - d, 0.0, 1.0))
        centre |= d <= 0.5
    # the rectangle the pattern fills (at least 40 % of each side)
    r0, r1 = sorted(rng.integers(0, c, 2)) if rng.random() < 0.5 else (0, c)
    c0, c1 = sorted(rng.integers(0, c, 2)) if rng.random() < 0.5 else (0, c)
    if r1 - r0 < 0.4 * c:
        r0, r1 = 0, c
    if c1 - c0 < 0.4 * c:
        c0, c1 = 0, c
    inside = np.zeros((c, c), bool)
    inside[r0:r1, c0:c1] = True
    coverage = np.where(inside, coverage, 0.0).astype(np.float32)
    centre &= inside
    image = darken(background, coverage, rng, style)
    return image, centre


def list_crack_maps(root: str | Path) -> list[Path]:
    files = [p for p in sorted(Path(root).glob("*.png"))]
    if not files:
        raise DatasetError(f"{root}: no crack-map PNGs found")
    return files


@dataclass
class NegativeSource:
    """Crops of intact images: distance target ``clip_px`` everywhere, empty body."""

    images: list[NegativeImage]
    clip_px: float = 20.0
    hot_share: float = 0.5

    def __len__(self) -> int:
        return len(self.images)

    def crop(
        self, crop_px: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        neg = self.images[int(rng.integers(len(self.images)))]
        image = negative_crop(neg, crop_px, rng, hot_share=self.hot_share)
        return (
            image,
            np.full((crop_px, crop_px), self.clip_px, np.float32),
            np.zeros((crop_px, crop_px), bool),
        )


@dataclass
class SyntheticSource:
    """Real crack-map stamps darkened into crops of intact images (exact targets)."""

    backgrounds: list[NegativeImage]
    stamps: list[CrackStamp]
    style: SyntheticStyle = field(default_factory=SyntheticStyle)
    clip_px: float = 20.0

    def __len__(self) -> int:
        return min(len(self.backgrounds), len(self.stamps))

    def crop(
        self, crop_px: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        neg = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        background = negative_crop(neg, crop_px, rng, hot_share=0.0)
        stamp = self.stamps[int(rng.integers(len(self.stamps)))]
        return render_synthetic_crack(
            background, stamp, rng, style=self.style, clip_px=self.clip_px
        )
