"""Cloud-Optimized GeoTIFF output, written window by window.

:class:`TiledRasterWriter` writes one window at a time into a temporary file and, on close,
converts it to a Cloud-Optimized GeoTIFF with overviews (GDAL's COG driver), then renames it
into place, so a reader never sees a half-written output. The temporary file is a raw
row-major array up to :data:`UNCOMPRESSED_TMP_MAX_BYTES` (a process on the same machine, such
as a local Dask worker, can write its windows into it itself: :class:`SharedRaster`), a
compressed tiled GeoTIFF above. Memory stays flat: GDAL's block cache is capped
(:data:`cracksurvey.io.raster.GDAL_CACHEMAX_BYTES`), windows are mapped only while they are
written or read, and no image-sized array is ever held. Average overviews (the distance map's)
are built as the windows arrive (:class:`_IncrementalOverviews`), and so are nearest ones (the
mask's): closing only copies and compresses what is already there.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from cracksurvey.io.raster import GDAL_CACHEMAX_BYTES, open_quietly

__all__ = [
    "OverviewResampling",
    "SharedRaster",
    "TiledRasterWriter",
    "finish_concurrently",
    "overview_factors",
]

log = logging.getLogger(__name__)

OverviewResampling = Literal["average", "nearest", "mode", "bilinear"]

UNCOMPRESSED_TMP_MAX_BYTES = 2 * 2**30
"""Largest temporary full-resolution file kept raw (larger ones: a GeoTIFF, ZSTD level 1).

Raw, finishing the COG does not decompress what it compresses again, and a worker on this
machine can write its windows in place (docs/performance.md); above this size the disk use
wins."""

_DERIVE_BAND_ROWS = 1024  # rows of the finer overview read at once when deriving a coarser one
#: Writes go through rasterio as (1, rows, cols) arrays with a band list: a 2-D array with a
#: band number is stacked into a new 3-D copy first (measured 1.5-3 ms per 1088² tile).
_BAND = [1]


@dataclass(frozen=True)
class SharedRaster:
    """The raw temporary file of a :class:`TiledRasterWriter`, for a process on the same
    machine to write its windows into (picklable: a local Dask worker writes a tile's core
    there and sends back only that it did; the writer then calls
    :meth:`TiledRasterWriter.written`).

    ``height x width`` values of ``dtype``, row-major, native byte order, at ``path``.
    """

    path: str
    height: int
    width: int
    dtype: str

    def _rows(self, row0: int, row1: int, mode: Literal["r", "r+"]) -> np.memmap:
        """Rows ``row0:row1`` mapped (only them: a window does not map the whole raster)."""
        itemsize = np.dtype(self.dtype).itemsize
        return np.memmap(
            self.path,
            dtype=self.dtype,
            mode=mode,
            offset=row0 * self.width * itemsize,
            shape=(row1 - row0, self.width),
        )

    def write(self, window: tuple[int, int, int, int], array: np.ndarray) -> None:
        """Put ``array`` (rows, cols) at ``window = (row0, row1, col0, col1)``."""
        row0, row1, col0, col1 = window
        rows = self._rows(row0, row1, "r+")
        rows[:, col0:col1] = array
        del rows  # unmapped: the data is in the page cache the writer reads

    def read(self, window: tuple[int, int, int, int]) -> np.ndarray:
        """A copy of the values at ``window``."""
        row0, row1, col0, col1 = window
        rows = self._rows(row0, row1, "r")
        out = np.array(rows[:, col0:col1])
        del rows
        return out


def overview_factors(height: int, width: int, blocksize: int) -> list[int]:
    """Decimation factors of the overviews GDAL's COG driver makes (``OVERVIEWS=AUTO``):
    halving until the overview fits in one block.

    >>> overview_factors(4096, 4096, 512)
    [2, 4, 8]
    >>> overview_factors(513, 100, 512)
    [2]
    >>> overview_factors(512, 300, 512)
    []
    """
    factors, f = [], 1
    while max(-(-height // f), -(-width // f)) > blocksize:
        f *= 2
        factors.append(f)
    return factors


def _sum_2x2(a: np.ndarray) -> np.ndarray:
    return a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]


def _halve(sums: np.ndarray, counts: np.ndarray | float) -> tuple[np.ndarray, np.ndarray | float]:
    """2 x 2 block sums of ``sums`` and ``counts`` (a scalar: the same count everywhere); an
    odd last row/column is a block of its own."""
    h, w = sums.shape
    if h % 2 or w % 2:
        pad = ((0, h % 2), (0, w % 2))
        if not isinstance(counts, np.ndarray):
            counts = np.full((h, w), counts, np.float32)
        sums, counts = np.pad(sums, pad), np.pad(counts, pad)
    if isinstance(counts, np.ndarray):
        return _sum_2x2(sums), _sum_2x2(counts)
    return _sum_2x2(sums), counts * 4


def _sums_counts(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | float]:
    """Sums and counts of the valid (not NaN) pixels of a float array, pixel by pixel."""
    array = array.astype(np.float32, copy=False)
    nan = np.isnan(array)
    if not nan.any():
        return array, 1.0
    return np.where(nan, np.float32(0), array), (~nan).astype(np.float32)


def _means(sums: np.ndarray, counts: np.ndarray | float) -> np.ndarray:
    if not isinstance(counts, np.ndarray):
        return sums / np.float32(counts)
    out = np.full(sums.shape, np.nan, np.float32)
    return np.divide(sums, counts, out=out, where=counts > 0)


class _IncrementalOverviews:
    """Overviews of a one-band raster, built as windows are written: ``average`` (NaN = nodata)
    for a float raster, ``nearest`` for a class raster (the mask).

    A window aligned to an overview's factor (its origin a multiple of it, its end too or at
    the image edge) adds its part of that overview from its own pixels. Average: block means,
    with sums and counts carried from level to level, so every mean is over the valid
    full-resolution pixels, like GDAL's first level. Nearest: the pixel at the centre of each
    block (offset ``f // 2``, clamped at the image's far edges), so a class is never blended.
    Levels some window was not aligned to are derived at the end from the finest level below
    them, band by band (average of averages, or every other pixel, as GDAL derives coarser
    levels). Each level is a temporary uncompressed tiled GeoTIFF; memory stays flat.

    The engine's tiles start at multiples of 32 (the network's input multiple), so at least the
    five finest levels are built on the fly; finishing the COG then only copies them.
    """

    def __init__(
        self,
        base: Path,
        *,
        height: int,
        width: int,
        factors: list[int],
        blocksize: int,
        dtype: np.dtype,
        nodata: float,
        resampling: Literal["average", "nearest"],
    ) -> None:
        self.height, self.width, self.factors = height, width, factors
        self.resampling = resampling
        self.paths = [base.with_name(f"{base.name}.ov{f}.tif") for f in factors]
        self.n_incremental = len(factors)  # levels every window so far was aligned to
        profile = dict(
            driver="GTiff",
            count=1,
            dtype=dtype.name,
            nodata=nodata,
            tiled=True,
            blockxsize=blocksize,
            blockysize=blocksize,
            sparse_ok=True,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the VRT has it
            self._ds = [
                rasterio.open(p, "w", height=-(-height // f), width=-(-width // f), **profile)
                for p, f in zip(self.paths, factors)
            ]

    def _aligned(self, window: tuple[int, int, int, int], f: int) -> bool:
        row0, row1, col0, col1 = window
        return (
            row0 % f == 0
            and col0 % f == 0
            and (row1 % f == 0 or row1 == self.height)
            and (col1 % f == 0 or col1 == self.width)
        )

    def write(self, window: tuple[int, int, int, int], array: np.ndarray) -> None:
        row0, row1, col0, col1 = window
        if self.resampling == "nearest":
            for k, f in enumerate(self.factors[: self.n_incremental]):
                if not self._aligned(window, f):
                    self.n_incremental = k
                    break
                rows = _centres(row0, row1, f, self.height) - row0
                cols = _centres(col0, col1, f, self.width) - col0
                self._ds[k].write(
                    array[np.ix_(rows, cols)][None],
                    _BAND,
                    window=Window(col0 // f, row0 // f, cols.size, rows.size),
                )
            return
        sums, counts = _sums_counts(array)
        for k, f in enumerate(self.factors[: self.n_incremental]):
            if not self._aligned(window, f):
                self.n_incremental = k  # this level and coarser ones are derived at the end
                break
            sums, counts = _halve(sums, counts)
            means = _means(sums, counts)
            self._ds[k].write(
                means[None],
                _BAND,
                window=Window(col0 // f, row0 // f, means.shape[1], means.shape[0]),
            )

    def finish(self) -> list[Path] | None:
        """Close the levels (deriving those not built on the fly); None when not even the
        first level could be built (the caller lets GDAL compute all of them)."""
        self.close()
        if self.n_incremental == 0:
            return None
        for k in range(self.n_incremental, len(self.factors)):
            with (
                open_quietly(self.paths[k - 1]) as finer,
                open_quietly(self.paths[k], "r+") as coarser,
            ):
                for row in range(0, finer.height, _DERIVE_BAND_ROWS):
                    rows = min(_DERIVE_BAND_ROWS, finer.height - row)
                    band = finer.read(1, window=Window(0, row, finer.width, rows))
                    if self.resampling == "nearest":
                        half = band[
                            np.ix_(
                                _centres(0, rows, 2, rows),
                                _centres(0, finer.width, 2, finer.width),
                            )
                        ]
                    else:
                        half = _means(*_halve(*_sums_counts(band)))
                    coarser.write(half, 1, window=Window(0, row // 2, *half.shape[::-1]))
        return self.paths

    def close(self) -> None:
        for ds in self._ds:
            if not ds.closed:
                ds.close()

    def remove(self) -> None:
        self.close()
        for p in self.paths:
            p.unlink(missing_ok=True)


def _centres(start: int, stop: int, f: int, size: int) -> np.ndarray:
    """Full-resolution indices that the overview of factor ``f`` takes for its pixels
    ``start // f`` to ``ceil(stop / f)``: each block's centre (``f // 2``), clamped to
    ``size - 1``. ``start`` is a multiple of ``f``."""
    return np.minimum(np.arange(start, stop, f) + f // 2, size - 1)


class TiledRasterWriter:
    """Single writer of a one-band raster, window by window, finished as a COG with overviews.

    Use as a context manager. Inside, :meth:`write` puts one window at a time (any order) into a
    temporary file beside ``path`` (a raw array up to :data:`UNCOMPRESSED_TMP_MAX_BYTES`, which
    another process can also write windows into: :attr:`shared`, :meth:`written`; a compressed
    tiled GeoTIFF above); pixels no window covered get ``nodata``. A clean exit converts it to
    a Cloud-Optimized GeoTIFF (ZSTD + predictor, 512 px blocks, overviews) and renames it to
    ``path`` atomically. An exception discards everything and leaves ``path`` untouched. Average
    overviews of a float raster and nearest overviews of any raster are built as the windows
    arrive (:class:`_IncrementalOverviews`); other resamplings are left to GDAL when the COG is
    written.

    Parameters
    ----------
    path : str or Path
        The output ``.tif``.
    height, width : int
        Pixels (like the input image).
    transform : affine.Affine
        Georeferencing of the input image.
    crs : CRS or None
    dtype : {'float32', 'uint8'}
    nodata : float
        NaN for distance maps, 255 for masks.
    overview_resampling : {'average', 'nearest', 'mode', 'bilinear'}
        How overviews are computed (``average`` for distances, ``nearest`` for masks).
    blocksize : int
        Internal tile size of the temporary and final GeoTIFF.

    Examples
    --------
    >>> with TiledRasterWriter(p, height=h, width=w, transform=t, crs=c) as out:  # doctest: +SKIP
    ...     out.write((0, 512, 0, 512), distance_core)
    """

    def __init__(
        self,
        path: str | Path,
        *,
        height: int,
        width: int,
        transform: Affine,
        crs: CRS | None,
        dtype: Literal["float32", "uint8"] = "float32",
        nodata: float = float("nan"),
        overview_resampling: OverviewResampling = "average",
        blocksize: int = 512,
    ) -> None:
        self.path = Path(path)
        self.height = height
        self.width = width
        self.dtype = np.dtype(dtype)
        self.overview_resampling = overview_resampling
        self.blocksize = blocksize
        token = uuid.uuid4().hex[:8]
        self._tmp = self.path.with_name(f".{self.path.name}.{token}.partial.tif")
        self._cog_tmp = self.path.with_name(f".{self.path.name}.{token}.cog.tif")
        self._vrt = self.path.with_name(f".{self.path.name}.{token}.vrt")
        self._raw: SharedRaster | None = None
        if height * width * self.dtype.itemsize <= UNCOMPRESSED_TMP_MAX_BYTES:
            raw_path = self.path.with_name(f".{self.path.name}.{token}.partial.raw")
            self._raw = SharedRaster(str(raw_path.absolute()), height, width, self.dtype.name)
        self._windows: list[tuple[int, int, int, int]] = []  # written to the raw file
        self._profile = dict(
            driver="GTiff",
            height=height,
            width=width,
            count=1,
            dtype=self.dtype.name,
            crs=crs,
            transform=transform,
            nodata=nodata,
            tiled=True,
            blockxsize=blocksize,
            blockysize=blocksize,
            bigtiff="if_safer",
            sparse_ok=True,
        )
        if self._raw is None:  # fast compression; the COG is compressed again at close
            self._profile.update(
                compress="zstd", zstd_level=1, predictor=3 if self.dtype.kind == "f" else 2
            )
        self._factors = overview_factors(height, width, blocksize)
        self._incremental = (overview_resampling == "average" and self.dtype.kind == "f") or (
            overview_resampling == "nearest"
        )
        self._nodata = nodata
        self._env: rasterio.Env | None = None
        self._ds: rasterio.io.DatasetWriter | None = None
        self._overviews: _IncrementalOverviews | None = None
        self._finished = False

    def __enter__(self) -> TiledRasterWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX_BYTES)
        self._env.__enter__()
        try:
            if self._raw is None:
                self._ds = rasterio.open(self._tmp, "w", **self._profile)
            else:  # sparse until written; pixels never written get the nodata at the end
                with open(self._raw.path, "wb") as f:
                    f.truncate(self.height * self.width * self.dtype.itemsize)
            if self._incremental and self._factors:
                self._overviews = _IncrementalOverviews(
                    self._tmp,
                    height=self.height,
                    width=self.width,
                    factors=self._factors,
                    blocksize=self.blocksize,
                    dtype=self.dtype,
                    nodata=self._nodata,
                    resampling="nearest" if self.overview_resampling == "nearest" else "average",
                )
        except BaseException:
            self._cleanup()
            raise
        return self

    @property
    def shared(self) -> SharedRaster | None:
        """The raw temporary file, for another process on this machine to write windows into
        (then call :meth:`written`); None when the temporary file is a compressed GeoTIFF."""
        return self._raw

    def _check(self, window: tuple[int, int, int, int]) -> None:
        if self._env is None:
            raise RuntimeError("TiledRasterWriter used outside its `with` block")
        row0, row1, col0, col1 = window
        if row0 < 0 or col0 < 0 or row1 > self.height or col1 > self.width or row0 >= row1:
            raise ValueError(f"window {window} is outside the {self.height}x{self.width} raster")

    def write(self, window: tuple[int, int, int, int], array: np.ndarray) -> None:
        """Write ``array`` (rows, cols) at ``window = (row0, row1, col0, col1)``."""
        self._check(window)
        row0, row1, col0, col1 = window
        if array.shape != (row1 - row0, col1 - col0):
            raise ValueError(f"array of shape {array.shape} does not fit window {window}")
        array = array.astype(self.dtype, copy=False)
        if self._raw is not None:
            self._raw.write(window, array)
            self._windows.append(window)
        else:
            assert self._ds is not None
            window_ = Window(col0, row0, col1 - col0, row1 - row0)
            self._ds.write(array[None], _BAND, window=window_)
        if self._overviews is not None:
            self._overviews.write(window, array)

    def written(self, window: tuple[int, int, int, int]) -> None:
        """``window`` was written into :attr:`shared` by another process: account for it
        (its overviews are built from the file)."""
        self._check(window)
        if self._raw is None:
            raise RuntimeError("written() needs the raw temporary file (see .shared)")
        self._windows.append(window)
        if self._overviews is not None:
            self._overviews.write(window, self._raw.read(window))

    def _fill_unwritten(self) -> None:
        """Give the nodata value to the pixels of the raw file no window covered."""
        assert self._raw is not None
        rows = np.unique(
            [0, self.height, *(w[0] for w in self._windows), *(w[1] for w in self._windows)]
        )
        cols = np.unique(
            [0, self.width, *(w[2] for w in self._windows), *(w[3] for w in self._windows)]
        )
        covered = np.zeros((rows.size - 1, cols.size - 1), bool)
        for row0, row1, col0, col1 in self._windows:
            covered[
                np.searchsorted(rows, row0) : np.searchsorted(rows, row1),
                np.searchsorted(cols, col0) : np.searchsorted(cols, col1),
            ] = True
        for i, j in zip(*np.nonzero(~covered)):
            window = (int(rows[i]), int(rows[i + 1]), int(cols[j]), int(cols[j + 1]))
            shape = (window[1] - window[0], window[3] - window[2])
            self.write(window, np.full(shape, self._nodata, self.dtype))

    def finish(self) -> None:
        """Close the temporary file and write the COG (safe to call from another thread).

        A clean exit of the ``with`` block calls it when it has not been called yet;
        :func:`finish_concurrently` runs several writers' at once.
        """
        if self._finished:
            return
        if self._raw is not None:
            self._fill_unwritten()
        elif self._ds is not None and not self._ds.closed:
            self._ds.close()
        source = self._tmp
        levels = self._overviews.finish() if self._overviews is not None else None
        if levels or self._raw is not None:  # the COG driver copies overviews built on the fly
            source = self._source_vrt(levels or [])
        rasterio.shutil.copy(
            str(source),
            str(self._cog_tmp),
            driver="COG",
            # ZSTD level 1 on all cores: measured 3x faster than DEFLATE level 6 at the same
            # size (float distances barely compress); GDAL >= 2.3 reads it.
            COMPRESS="ZSTD",
            LEVEL="1",
            NUM_THREADS="ALL_CPUS",
            PREDICTOR="YES",
            BLOCKSIZE=str(self.blocksize),
            OVERVIEWS="AUTO",
            RESAMPLING=self.overview_resampling.upper(),
            BIGTIFF="IF_SAFER",
        )
        os.replace(self._cog_tmp, self.path)
        self._finished = True

    def _source_vrt(self, overviews: list[Path]) -> Path:
        """A VRT of the temporary file that declares ``overviews`` as its overviews (GDAL's
        COG driver copies a source's existing overviews instead of computing them)."""
        crs, transform = self._profile["crs"], self._profile["transform"]
        assert isinstance(transform, Affine)
        geo = (
            ""
            if transform.is_identity
            else f"<GeoTransform>{', '.join(repr(v) for v in transform.to_gdal())}</GeoTransform>"
        )
        srs = "" if crs is None else f"<SRS>{escape(CRS.from_user_input(crs).to_wkt())}</SRS>"
        ovr = "".join(
            f'<Overview><SourceFilename relativeToVRT="0">{escape(str(p))}</SourceFilename>'
            "<SourceBand>1</SourceBand></Overview>"
            for p in overviews
        )
        data_type = {"float32": "Float32", "uint8": "Byte"}[self.dtype.name]
        head = f'<VRTRasterBand dataType="{data_type}" band="1"'
        if self._raw is not None:
            # the raw file beside the VRT (where GDAL allows raw sources by default)
            band = (
                f'{head} subClass="VRTRawRasterBand">'
                f'<SourceFilename relativeToVRT="1">{escape(Path(self._raw.path).name)}'
                "</SourceFilename><ImageOffset>0</ImageOffset>"
                f"<PixelOffset>{self.dtype.itemsize}</PixelOffset>"
                f"<LineOffset>{self.dtype.itemsize * self.width}</LineOffset>"
                f"<ByteOrder>{'LSB' if sys.byteorder == 'little' else 'MSB'}</ByteOrder>"
            )
        else:
            size = f'xOff="0" yOff="0" xSize="{self.width}" ySize="{self.height}"'
            band = (
                f'{head}><SimpleSource><SourceFilename relativeToVRT="0">'
                f"{escape(str(self._tmp))}</SourceFilename><SourceBand>1</SourceBand>"
                f"<SrcRect {size}/><DstRect {size}/></SimpleSource>"
            )
        self._vrt.write_text(
            f'<VRTDataset rasterXSize="{self.width}" rasterYSize="{self.height}">{srs}{geo}'
            f"{band}<NoDataValue>{self._nodata!r}</NoDataValue>{ovr}</VRTRasterBand>"
            "</VRTDataset>"
        )
        return self._vrt

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._env is not None
        try:
            if exc_type is None:
                self.finish()
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        """Close and delete every temporary file, leave the environment."""
        if self._ds is not None and not self._ds.closed:
            self._ds.close()
        self._ds = None
        if self._overviews is not None:
            self._overviews.remove()
            self._overviews = None
        for p in (self._tmp, self._cog_tmp, self._vrt):
            p.unlink(missing_ok=True)
        if self._raw is not None:
            Path(self._raw.path).unlink(missing_ok=True)
        if self._env is not None:
            self._env.__exit__(None, None, None)
            self._env = None


def finish_concurrently(*writers: TiledRasterWriter) -> None:
    """Finish several writers at once (the COG copies are serial work in GDAL: overviews and
    reading run on one core each, so two copies side by side use both cores while the engine's
    workers are idle at the end of an image). Call inside their ``with`` blocks."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(writers)) as pool:
        for future in [pool.submit(w.finish) for w in writers]:
            future.result()
