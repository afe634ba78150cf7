"""Tiling: core windows with a halo, reflect-padded reads, and the per-tile function.

A *tile* is a *core window* plus a *halo* of context on every side. The network sees the whole
read window (core + halo); only the core of its prediction is kept, so neighbouring tiles meet
without seams. Beyond the image border the read window is filled by reflecting pixel indices
about the border (like ``np.pad(..., mode='reflect')``), so a tile at the border sees exactly the
context that :func:`predict_untiled` gives the whole image.

Alignment: TernausNet pools five times (stride 32). Core origins are multiples of ``multiple``
and the halo is rounded up to a multiple of ``multiple``, so every read window starts at
``-halo`` modulo 32, which is where the untiled reference starts too: pooling grids coincide
across tilings and tile size is a throughput knob, not a correctness knob.

Everything here is plain numpy/torch; :func:`process_tile` is the per-tile function the engine
maps over an image's tiles (with Dask, or in-process), and :func:`predict_tiled` the same on an
in-memory array without Dask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cracksurvey.config import Border, Precision
from cracksurvey.predict import predict_tile
from cracksurvey.skeleton import TileSkeleton, extract_tile_skeleton, threshold_distance

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cracksurvey.model import ModelCard

Window = tuple[int, int, int, int]
"""``(row0, row1, col0, col1)``, half-open, in image pixel coordinates (may extend outside)."""

WindowReader = Callable[[int, int, int, int], np.ndarray]
"""``reader(row0, row1, col0, col1) -> (bands, row1-row0, col1-col0)`` for an in-image window."""


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-int(value) // multiple) * multiple


@dataclass(frozen=True)
class Tile:
    """One tile: a core window that is kept and a larger read window that gives context.

    Attributes
    ----------
    index : int
        Position of the tile in :func:`tile_grid`'s list (row-major).
    row0, row1, col0, col1 : int
        Core window, half-open, inside the image.
    read_row0, read_row1, read_col0, read_col1 : int
        Read window (core + halo, size a multiple of 32; :func:`tile_grid` says how it meets
        the image's edges); pixels beyond the image are reflected (:func:`read_window_reflect`).
    """

    index: int
    row0: int
    row1: int
    col0: int
    col1: int
    read_row0: int
    read_row1: int
    read_col0: int
    read_col1: int

    @property
    def core(self) -> Window:
        """Core window ``(row0, row1, col0, col1)`` in image coordinates."""
        return (self.row0, self.row1, self.col0, self.col1)

    @property
    def read(self) -> Window:
        """Read window ``(row0, row1, col0, col1)`` in image coordinates."""
        return (self.read_row0, self.read_row1, self.read_col0, self.read_col1)

    @property
    def core_in_read(self) -> tuple[slice, slice]:
        """Slices that cut the core out of an array covering the read window."""
        r = self.row0 - self.read_row0
        c = self.col0 - self.read_col0
        return (slice(r, r + self.row1 - self.row0), slice(c, c + self.col1 - self.col0))

    @property
    def core_shape(self) -> tuple[int, int]:
        return (self.row1 - self.row0, self.col1 - self.col0)

    @property
    def read_shape(self) -> tuple[int, int]:
        return (self.read_row1 - self.read_row0, self.read_col1 - self.read_col0)


def tile_grid(
    height: int,
    width: int,
    *,
    core_px: int,
    halo_px: int,
    multiple: int = 32,
    border: Border = "image",
) -> list[Tile]:
    """Split an image into tiles whose core windows partition it exactly.

    Parameters
    ----------
    height, width : int
        Image size in pixels (>= 1).
    core_px : int
        Core window side in pixels; rounded up to a multiple of ``multiple``. The last row and
        column of cores are cut at the image border. (A tile's read window, the ``tile_px`` of
        the configuration, is the core plus a halo on each side.)
    halo_px : int
        Context on each side of the core, rounded up to a multiple of ``multiple``.
    multiple : int
        Network input multiple (32 for TernausNet).
    border : {'image', 'reflect'}
        ``image`` (default): no mirrored context, the network sees an edge as it saw the edges
        of its training and validation crops. A window that would cross an edge is moved inward
        instead, keeping its size (more real context on the other side, and windows of one size
        behave alike: with windows merely cut at the edge, 320-px tiles moved the mean crack
        width of a test crop by 3.9 %, now 0.4 %); only an image smaller than a window gets one
        window over all of it. As in training, the image is first extended at the bottom/right
        to a multiple of ``multiple`` (reflected), which the windows may include.
        ``reflect``: read windows are ``core ± halo`` with the pixels beyond the image
        reflected, extended at the bottom/right to a multiple of ``multiple``.

    Returns
    -------
    list of Tile, row-major.

    Examples
    --------
    >>> [t.core for t in tile_grid(100, 70, core_px=64, halo_px=32)]
    [(0, 64, 0, 64), (0, 64, 64, 70), (64, 100, 0, 64), (64, 100, 64, 70)]
    >>> tile_grid(100, 70, core_px=64, halo_px=32)[1].read
    (0, 128, 0, 96)
    >>> tile_grid(100, 70, core_px=64, halo_px=32, border="reflect")[1].read
    (-32, 96, 32, 128)
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size {height}x{width}: expected at least 1x1 pixels")
    if core_px < 1 or halo_px < 0 or multiple < 1:
        raise ValueError(
            f"core_px={core_px}, halo_px={halo_px}, multiple={multiple}: expected core_px >= 1, "
            "halo_px >= 0, multiple >= 1"
        )
    if border not in ("reflect", "image"):
        raise ValueError(f"border={border!r}: expected 'reflect' or 'image'")
    step = round_up(core_px, multiple)
    halo = round_up(halo_px, multiple)

    def read(start: int, stop: int, size: int) -> tuple[int, int]:
        if border == "reflect":
            return start - halo, start - halo + round_up(stop - start + 2 * halo, multiple)
        # the window of a reflect tile, moved inward where it would cross an edge of the image
        # (as the network takes it whole: extended at the end to a multiple, reflected)
        end = round_up(size, multiple)
        lo = start - halo
        hi = lo + round_up(stop - start + 2 * halo, multiple)
        if lo < 0:
            lo, hi = 0, hi - lo
        if hi > end:
            lo, hi = max(lo - (hi - end), 0), end
        return lo, hi

    tiles: list[Tile] = []
    for row0 in range(0, height, step):
        row1 = min(row0 + step, height)
        read_row0, read_row1 = read(row0, row1, height)
        for col0 in range(0, width, step):
            col1 = min(col0 + step, width)
            read_col0, read_col1 = read(col0, col1, width)
            tiles.append(
                Tile(len(tiles), row0, row1, col0, col1, read_row0, read_row1, read_col0, read_col1)
            )
    return tiles


def reflect_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices ``start..stop-1`` folded into ``[0, size)`` by reflection about the borders.

    Same as the indices ``np.pad(..., mode='reflect')`` uses (the border pixel is not repeated),
    for any distance from the image, so windows larger than the image work too. A 1-pixel-wide
    axis maps everything to 0.

    >>> reflect_indices(-3, 6, 3).tolist()
    [1, 2, 1, 0, 1, 2, 1, 0, 1]
    """
    idx = np.arange(start, stop, dtype=np.int64)
    if size == 1:
        return np.zeros_like(idx)
    period = 2 * (size - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= size, period - idx, idx)


def read_window_reflect(
    reader: WindowReader, window: Window, height: int, width: int
) -> np.ndarray:
    """Read a window that may extend beyond the image, reflecting outside pixels.

    Parameters
    ----------
    reader : callable ``(row0, row1, col0, col1) -> ndarray (bands, rows, cols)``
        Reads an in-image window (e.g. :meth:`cracksurvey.io.raster.RasterSource.read`, or a
        slice of an in-memory array).
    window : ``(row0, row1, col0, col1)``
        Possibly outside the image.
    height, width : int
        Image size.

    Returns
    -------
    ndarray of shape (bands, row1-row0, col1-col0)
        Equal to ``np.pad(image, ..., mode='reflect')`` cut to the window; only the part of the
        image the window needs is read.
    """
    row0, row1, col0, col1 = window
    rows = reflect_indices(row0, row1, height)
    cols = reflect_indices(col0, col1, width)
    r_lo, r_hi = int(rows.min()), int(rows.max()) + 1
    c_lo, c_hi = int(cols.min()), int(cols.max()) + 1
    block = reader(r_lo, r_hi, c_lo, c_hi)
    if r_lo == row0 and r_hi == row1 and c_lo == col0 and c_hi == col1:
        return block  # entirely inside: no copy
    return block[:, rows - r_lo][:, :, cols - c_lo]


def array_reader(array: np.ndarray) -> WindowReader:
    """A :data:`WindowReader` over an in-memory ``(bands, rows, cols)`` array."""

    def read(row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        return array[:, row0:row1, col0:col1]

    return read


@dataclass(frozen=True)
class TileResult:
    """What one tile contributes to the image outputs.

    Attributes
    ----------
    distance_core : ndarray of shape (rows, cols), float32, pixels, or None
        Predicted distance to the crack centreline on the core window; NaN on nodata. None
        (and ``mask_core`` None) when a worker wrote both into the output files itself.
    body_core : ndarray of shape (rows, cols), float32, or None
        Crack-body probability on the core window (None without a body head); NaN on nodata.
    mask_core : ndarray of shape (rows, cols), uint8
        1 crack (distance <= threshold), 0 background, 255 nodata.
    skeleton : TileSkeleton
        Skeleton pixels inside the core, in coordinates relative to the read window
        (``.shifted(tile.read_row0, tile.read_col0)`` gives image coordinates).
    """

    distance_core: np.ndarray | None
    body_core: np.ndarray | None
    mask_core: np.ndarray | None
    skeleton: TileSkeleton


MASK_NODATA = 255


def tile_grey(
    rgb: np.ndarray,
    *,
    invalid: np.ndarray | None = None,
    origin: tuple[int, int] = (0, 0),
    image_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """A tile's brightness for the widths: the mean of its bands, NaN off the image.

    NaN on ``invalid`` (nodata) pixels and on the reflected pixels of a window beyond the
    image (``origin``: the window's position; ``image_size``: the image's rows and columns).
    """
    if rgb.dtype == np.uint8 and rgb.shape[0] == 3:
        # the same values as the mean (the sums are exact; checked for every sum 0-765) in
        # 40 % of its time: 2 of 5 ms on a 1280-px tile
        total = rgb[0].astype(np.uint16)
        total += rgb[1]
        total += rgb[2]
        grey = total.astype(np.float32)
        grey /= np.float32(3)
    else:
        grey = rgb.mean(axis=0, dtype=np.float32)
    if invalid is not None:
        grey[invalid] = np.nan
    if image_size is not None:
        row0, col0 = origin
        height, width = image_size
        grey[: max(0, -row0)] = np.nan
        grey[max(0, height - row0) :] = np.nan
        grey[:, : max(0, -col0)] = np.nan
        grey[:, max(0, width - col0) :] = np.nan
    return grey


def process_tile(
    rgb_with_halo: np.ndarray,
    model: nn.Module,
    card: ModelCard,
    *,
    core: tuple[slice, slice],
    threshold_px: float | None = None,
    precision: Precision = "bf16",
    valid: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    origin: tuple[int, int] = (0, 0),
    image_size: tuple[int, int] | None = None,
) -> TileResult:
    """Predict one tile and keep its core: distance, body, mask and skeleton with widths.

    Parameters
    ----------
    rgb_with_halo : ndarray of shape (3, H, W), uint8
        The read window (core + halo); H, W multiples of ``card.input_multiple``.
    model, card : the network and its model card.
    core : (slice, slice)
        The core window inside the read window (:attr:`Tile.core_in_read`).
    threshold_px : float, optional
        Crack = distance <= this (pixels); None: the card's calibrated threshold.
    precision : {'bf16', 'fp32'}
    valid : ndarray of shape (H, W), bool, optional
        False on nodata pixels: they get NaN distance, mask 255 and no skeleton.
    device : torch device.
    origin : (int, int)
        Image position of the read window's pixel (0, 0) (:attr:`Tile.read`): the widths
        sample the same image pixels whatever the tiling.
    image_size : (rows, cols), optional
        The image's size: the reflected pixels of a window beyond the image are not used for
        widths. None: the whole window is image.

    Returns
    -------
    TileResult
    """
    distance, body = predict_tile(model, card, rgb_with_halo, precision=precision, device=device)
    invalid = None
    if valid is not None and not valid.all():
        invalid = ~valid
        distance[invalid] = np.nan  # nodata: never crack, never skeleton
        if body is not None:
            body[invalid] = np.nan
    threshold = card.threshold_px if threshold_px is None else threshold_px
    grey = tile_grey(rgb_with_halo, invalid=invalid, origin=origin, image_size=image_size)
    skeleton = extract_tile_skeleton(
        distance, body, threshold_px=threshold, core=core, grey=grey, origin=origin
    )
    distance_core = distance[core].copy()
    body_core = None if body is None else body[core].copy()
    mask_core = threshold_distance(distance_core, threshold_px=threshold).astype(np.uint8)
    if invalid is not None:
        mask_core[invalid[core]] = MASK_NODATA
    return TileResult(distance_core, body_core, mask_core, skeleton)


def predict_untiled(
    rgb_full: np.ndarray,
    model: nn.Module,
    card: ModelCard,
    *,
    halo_px: int,
    precision: Precision = "fp32",
    device: str | torch.device = "cpu",
    border: Border = "image",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reference prediction: the network on the whole image, no tiling.

    ``border="image"``: the image as it is, reflect-padded only at the bottom/right up to a
    multiple of ``card.input_multiple`` (the halo plays no part: every pixel has the whole
    image as context). ``"reflect"``: first reflect-padded by the halo (rounded up to the
    multiple, as :func:`tile_grid` does) on every side. Only for small images (tests): memory
    grows with the image.

    Returns
    -------
    distance : ndarray of shape (rows, cols), float32
    body : ndarray of shape (rows, cols), float32, or None
    """
    multiple = card.input_multiple
    _, height, width = rgb_full.shape
    halo = round_up(halo_px, multiple) if border == "reflect" else 0
    window = (
        -halo,
        -halo + round_up(height + 2 * halo, multiple),
        -halo,
        -halo + round_up(width + 2 * halo, multiple),
    )
    padded = read_window_reflect(array_reader(rgb_full), window, height, width)
    distance, body = predict_tile(
        model, card, np.ascontiguousarray(padded), precision=precision, device=device
    )
    core = (slice(halo, halo + height), slice(halo, halo + width))
    return distance[core].copy(), None if body is None else body[core].copy()


def predict_tiled(
    rgb_full: np.ndarray,
    model: nn.Module,
    card: ModelCard,
    *,
    core_px: int,
    halo_px: int,
    precision: Precision = "fp32",
    device: str | torch.device = "cpu",
    border: Border = "image",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Tile an in-memory image, predict every tile and stitch the cores (no Dask, no files).

    The same tiling, reads and per-tile function as the engine, on an array: for tests,
    notebooks and small images (the stitched arrays are image-sized).

    Parameters
    ----------
    rgb_full : ndarray of shape (3, rows, cols), uint8
    core_px, halo_px, border : see :func:`tile_grid`.

    Returns
    -------
    distance : ndarray of shape (rows, cols), float32
    body : ndarray of shape (rows, cols), float32, or None
    """
    _, height, width = rgb_full.shape
    distance = np.empty((height, width), np.float32)
    body: np.ndarray | None = None
    reader = array_reader(rgb_full)
    tiles = tile_grid(
        height, width, core_px=core_px, halo_px=halo_px, multiple=card.input_multiple, border=border
    )
    for tile in tiles:
        rgb = np.ascontiguousarray(read_window_reflect(reader, tile.read, height, width))
        d, b = predict_tile(model, card, rgb, precision=precision, device=device)
        rows, cols = tile.core_in_read
        distance[tile.row0 : tile.row1, tile.col0 : tile.col1] = d[rows, cols]
        if b is not None:
            if body is None:
                body = np.empty((height, width), np.float32)
            body[tile.row0 : tile.row1, tile.col0 : tile.col1] = b[rows, cols]
    return distance, body
