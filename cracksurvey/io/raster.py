"""Raster IO: lazy windowed reads of input images, single-writer tiled output as COG.

The only place (with the rest of :mod:`cracksurvey.io`) that opens raster files.

Reading: :func:`describe_raster` opens an image once to check it and describe it
(:class:`RasterInfo`, picklable, sent to workers); :class:`RasterSource` reads in-image windows,
which :func:`cracksurvey.tiling.read_window_reflect` turns into boundless reflect-padded reads.

Writing: :class:`TiledRasterWriter` writes one window at a time into a tiled temporary GeoTIFF
and, on close, converts it to a Cloud-Optimized GeoTIFF with overviews (GDAL's COG driver),
then renames it into place, so a reader never sees a half-written output. Memory stays flat:
GDAL's block cache is capped (``GDAL_CACHEMAX``) and no image-sized array is ever held.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from ..errors import InputRasterError

log = logging.getLogger(__name__)

GDAL_CACHEMAX_BYTES = 256 * 2**20
"""GDAL block cache while reading and writing; GDAL's default is 5 % of RAM.

In bytes: rasterio passes an integer straight to ``GDALSetCacheMax64``, so ``256`` would mean
256 bytes (no cache: every partially written block is flushed, re-read and recompressed)."""

_SUPPORTED_KINDS = "uint8, uint16, int16, uint32, int32, float32, float64"


@dataclass(frozen=True)
class RasterInfo:
    """What the pipeline needs to know about an input image (picklable, small).

    Attributes
    ----------
    path : str
    height, width : int
        Pixels.
    count : int
        Number of bands.
    dtype : str
        numpy dtype name of the bands.
    nodata : float or None
    alpha_band : int or None
        0-based index of the alpha band (colour interpretation ``alpha``), if any.
    transform : affine.Affine
        Pixel to map/façade coordinates (identity when the image has none).
    crs : rasterio.crs.CRS or None
    """

    path: str
    height: int
    width: int
    count: int
    dtype: str
    nodata: float | None
    alpha_band: int | None
    transform: Affine
    crs: CRS | None

    @property
    def n_pixels(self) -> int:
        return self.height * self.width


def _input_error(path: str | Path, what: str) -> InputRasterError:
    return InputRasterError(
        f"{path}: {what}; expected a readable GeoTIFF/JPEG/PNG raster with 1, 3 or 4 bands "
        f"({_SUPPORTED_KINDS}) - re-export the image or remove it from the survey"
    )


def _gdal_detail(exc: BaseException) -> str:
    """The most specific message in an exception chain (GDAL's, not rasterio's wrapper)."""
    messages = []
    while exc is not None:
        messages.append(str(exc).strip())
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    useful = [m for m in messages if m and "See previous exception" not in m]
    return useful[-1] if useful else "unknown GDAL error"


def _open_quietly(path: str | Path) -> rasterio.io.DatasetReader:
    """rasterio.open for reading; a JPEG/PNG without georeferencing is expected here (the survey
    supplies its georeferencing), so rasterio's NotGeoreferencedWarning is not shown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def describe_raster(path: str | Path) -> RasterInfo:
    """Open an image, check it can be processed, and describe it.

    Raises
    ------
    InputRasterError
        The file is missing, not a raster, empty, or has an unsupported data type.
    """
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX_BYTES), _open_quietly(path) as ds:
            if ds.count < 1 or ds.height < 1 or ds.width < 1:
                raise _input_error(path, f"{ds.count} band(s) of {ds.height}x{ds.width} pixels")
            dtype = np.dtype(ds.dtypes[0])
            if dtype.kind not in "uif" or len(set(ds.dtypes)) != 1:
                raise _input_error(path, f"band data types {ds.dtypes} are not supported")
            alpha = [i for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha]
            if ds.count > 4 or (ds.count == 4 and not alpha):
                log.info("%s: %d bands without alpha; using bands 1-3 as RGB", path, ds.count)
            return RasterInfo(
                path=str(path),
                height=ds.height,
                width=ds.width,
                count=ds.count,
                dtype=dtype.name,
                nodata=ds.nodata,
                alpha_band=alpha[0] if alpha else None,
                transform=ds.transform,
                crs=ds.crs,
            )
    except RasterioError as exc:
        raise _input_error(path, f"cannot be opened ({exc})") from exc


class RasterSource:
    """An open input image that reads in-image windows (a context manager).

    Not thread-safe: open one per thread/task (opening a GeoTIFF costs about a millisecond).

    Parameters
    ----------
    path : str or Path
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX_BYTES)
        self._env.__enter__()
        try:
            self._ds = _open_quietly(self.path)
        except RasterioError as exc:
            self._env.__exit__(None, None, None)
            raise _input_error(path, f"cannot be opened ({exc})") from exc

    @property
    def driver(self) -> str:
        """GDAL driver short name (``GTiff``, ``JPEG``, ``PNG`` ...)."""
        return str(self._ds.driver)

    def read(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """All bands of an in-image window, ``(bands, row1-row0, col1-col0)``.

        Raises
        ------
        InputRasterError
            The window cannot be decoded (a corrupt or truncated file).
        """
        try:
            return self._ds.read(window=Window(col0, row0, col1 - col0, row1 - row0))
        except RasterioError as exc:
            error = _input_error(
                self.path,
                f"rows {row0}-{row1}, cols {col0}-{col1} cannot be decoded, the file is corrupt "
                f"or truncated ({_gdal_detail(exc)})",
            )
        # Raised without the GDAL exception chained: it does not survive pickling from a worker.
        raise error

    def read_overview(self, *, max_side_px: int = 1024) -> np.ndarray:
        """A decimated read of the whole image, longest side at most ``max_side_px``.

        Uses the file's overviews when it has them (nearest-neighbour decimation otherwise).
        """
        ds = self._ds
        factor = max(1, -(-max(ds.height, ds.width) // max_side_px))
        shape = (ds.count, max(1, ds.height // factor), max(1, ds.width // factor))
        try:
            return ds.read(out_shape=shape, resampling=Resampling.nearest)
        except RasterioError as exc:
            error = _input_error(self.path, f"cannot be decoded ({_gdal_detail(exc)})")
        raise error

    def close(self) -> None:
        self._ds.close()
        self._env.__exit__(None, None, None)

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_raster(path: str | Path) -> RasterSource:
    """Open an image for windowed reads (nothing is read until :meth:`RasterSource.read`)."""
    return RasterSource(path)


OverviewResampling = Literal["average", "nearest", "mode", "bilinear"]


class TiledRasterWriter:
    """Single writer of a one-band raster, window by window, finished as a COG with overviews.

    Use as a context manager. Inside, :meth:`write` puts one window at a time (any order) into a
    tiled temporary GeoTIFF beside ``path``; a clean exit converts it to a Cloud-Optimized
    GeoTIFF (ZSTD + predictor, 512 px blocks, overviews) and renames it to ``path``
    atomically. An exception discards everything and leaves ``path`` untouched.

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
            # Fast compression for the intermediate file; the COG is recompressed at close.
            compress="zstd",
            zstd_level=1,
            predictor=3 if self.dtype.kind == "f" else 2,
            bigtiff="if_safer",
            sparse_ok=True,
        )
        self._env: rasterio.Env | None = None
        self._ds: rasterio.io.DatasetWriter | None = None
        self._finished = False

    def __enter__(self) -> TiledRasterWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX_BYTES)
        self._env.__enter__()
        try:
            self._ds = rasterio.open(self._tmp, "w", **self._profile)
        except BaseException:
            self._env.__exit__(None, None, None)
            raise
        return self

    def write(self, window: tuple[int, int, int, int], array: np.ndarray) -> None:
        """Write ``array`` (rows, cols) at ``window = (row0, row1, col0, col1)``."""
        if self._ds is None:
            raise RuntimeError("TiledRasterWriter.write outside its `with` block")
        row0, row1, col0, col1 = window
        if array.shape != (row1 - row0, col1 - col0):
            raise ValueError(f"array of shape {array.shape} does not fit window {window}")
        if row0 < 0 or col0 < 0 or row1 > self.height or col1 > self.width:
            raise ValueError(f"window {window} is outside the {self.height}x{self.width} raster")
        window_ = Window(col0, row0, col1 - col0, row1 - row0)
        self._ds.write(array.astype(self.dtype, copy=False), 1, window=window_)

    def finish(self) -> None:
        """Close the temporary file and write the COG (safe to call from another thread).

        A clean exit of the ``with`` block calls it when it has not been called yet;
        :func:`finish_concurrently` runs several writers' at once.
        """
        if self._finished:
            return
        assert self._ds is not None
        if not self._ds.closed:
            self._ds.close()
        rasterio.shutil.copy(
            str(self._tmp),
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._ds is not None and self._env is not None
        try:
            if exc_type is None:
                self.finish()
        finally:
            if not self._ds.closed:
                self._ds.close()
            self._ds = None
            for p in (self._tmp, self._cog_tmp):
                p.unlink(missing_ok=True)
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


def raster_profile(path: str | Path) -> dict[str, object]:
    """Georeferencing and layout of a raster (for checks and tests): crs, transform, size, dtype."""
    with _open_quietly(path) as ds:
        return {
            "crs": ds.crs,
            "transform": ds.transform,
            "height": ds.height,
            "width": ds.width,
            "dtype": ds.dtypes[0],
            "nodata": ds.nodata,
            "count": ds.count,
        }
