"""Labelled crack datasets: folders of images and masks.

```
<root>/<split>/images/<name>.<jpg|png>
<root>/<split>/masks/<name>.png      # 1-channel, crack > 0
```
Shared by training (``cracksurvey.train``) and ``cracksurvey evaluate``; users' own data uses
the same layout. Images and masks are matched by base name; a missing mask is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cracksurvey.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Pair:
    """One labelled image: paths of the image and its mask, and the dataset it belongs to."""

    name: str
    image: Path
    mask: Path
    dataset: str


def list_pairs(root: str | Path, split: str) -> list[Pair]:
    """All image/mask pairs of one split of a dataset folder, sorted by name."""
    root = Path(root)
    images_dir = root / split / "images"
    masks_dir = root / split / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise DatasetError(
            f"{root / split}: expected subfolders images/ and masks/ (layout <root>/<split>/images|masks)"
        )
    pairs = []
    for image in sorted(images_dir.iterdir()):
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        mask = masks_dir / (image.stem + ".png")
        if not mask.exists():
            candidates = [p for p in masks_dir.glob(image.stem + ".*")]
            if not candidates:
                raise DatasetError(
                    f"{image}: no mask {mask.name} in {masks_dir}; add it or remove the image"
                )
            mask = candidates[0]
        pairs.append(Pair(image.stem, image, mask, root.name))
    if not pairs:
        raise DatasetError(f"{images_dir}: no images found")
    return pairs


def read_rgb(path: str | Path, *, upright: bool = False) -> np.ndarray:
    """Read an image as RGB uint8 of shape (3, rows, cols), as stored; ``upright``: turned as
    its EXIF orientation says (as photo viewers and annotation tools show it)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        arr = np.asarray((ImageOps.exif_transpose(im) if upright else im).convert("RGB"))
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask as bool (rows, cols); crack = value > 0 in the first channel (one channel: docs/method.md, D3)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode == "P":
            arr = np.asarray(im)  # palette indices (e.g. upstream MCS masks)
        else:
            arr = np.asarray(im.convert("L"))
    return arr > 0
