"""Client side of the engine: :class:`Engine` runs images tile by tile and writes their rasters.

For one image it builds the tile tasks (:func:`cracksurvey.tiling.tile_grid`, largest forward
first), submits at most ``max_in_flight`` of them at a time (memory stays flat whatever the
image size) and streams the results back (``as_completed``) to a single writer that writes the
distance map and the mask (COGs, window by window) and gathers the sparse skeleton in image
coordinates. On a local cluster the workers write their cores into the writers' raw temporary
files themselves (:class:`cracksurvey.io.cog.SharedRaster`) and return only the skeleton.
While an image is finished, the next image's first tiles already run (``next_image``).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from affine import Affine
from distributed import Client, as_completed
from rasterio.crs import CRS
from torch import nn

from cracksurvey.config import Border, EngineConfig, Precision
from cracksurvey.engine.cluster import (
    available_cores,
    local_layout,
    start_local_cluster,
    task_resources,
)
from cracksurvey.engine.worker import (
    BandSpec,
    ModelPlugin,
    PluginModelRef,
    QuickExitPlugin,
    tile_task,
)
from cracksurvey.io.cog import SharedRaster, TiledRasterWriter, finish_concurrently
from cracksurvey.io.raster import RasterHeader, RasterSource, describe_raster
from cracksurvey.model import ModelCard, Weights, model_from_bytes, read_weights
from cracksurvey.predict import (
    effective_precision,
    percentile_scale,
    release_freed_memory,
    resolve_device,
    valid_pixels,
)
from cracksurvey.progress import ProgressCallback, ProgressEvent
from cracksurvey.skeleton import TileSkeleton
from cracksurvey.tiling import MASK_NODATA, Tile, TileResult, tile_grid

__all__ = ["Engine", "ImageResult", "ModelSource", "run_image"]

log = logging.getLogger(__name__)

#: A model for the engine: weights read once (:func:`cracksurvey.model.read_weights`), a path
#: to a ``.safetensors`` file, None (the shipped default), or an in-memory ``(model, card)``.
ModelSource = Weights | str | Path | tuple[nn.Module, ModelCard] | None

RELEASE_AFTER_PX = 64_000_000
"""After an image this large, with nothing queued, idle workers give their kept heaps back
while the client finishes the image; after smaller ones they keep them: the next image's first
forward would page-fault them in again (docs/performance.md)."""


@dataclass(frozen=True)
class ImageResult:
    """What :meth:`Engine.run_image` produced for one image.

    Attributes
    ----------
    header : RasterHeader
        The input image (size, transform, CRS).
    skeleton : TileSkeleton
        Skeleton pixels of the whole image in image (row, col) indices, row-major order.
    distance_path, mask_path : Path
        The COGs written.
    card : ModelCard
    threshold_px : float
        The threshold that made the mask and the skeleton (pixels).
    precision : {'bf16', 'fp32'}
        The precision that actually ran.
    n_tiles : int
    seconds : float
        Wall time of the image.
    """

    header: RasterHeader
    skeleton: TileSkeleton
    distance_path: Path
    mask_path: Path
    card: ModelCard
    threshold_px: float
    precision: Precision
    n_tiles: int
    seconds: float

    @property
    def transform(self) -> Affine:
        return self.header.transform

    @property
    def crs(self) -> CRS | None:
        return self.header.crs


def _file_stat(path: str | Path) -> tuple[int, int] | None:
    """(mtime_ns, size) of a file, None if it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _forward_px(tile: Tile) -> int:
    return (tile.read_row1 - tile.read_row0) * (tile.read_col1 - tile.read_col0)


@dataclass
class _Prefetch:
    """Tiles of the next image already submitted (see ``Engine.run_image(next_image=...)``)."""

    path: Path
    header: RasterHeader | None  # None: the image could not be described; nothing submitted
    bands: BandSpec | None
    tiles: list[Tile]
    futures: list[Any]
    stat: tuple[int, int] | None = None  # (mtime_ns, size) when described


class Engine:
    """Runs images through tile -> model -> stitched COGs + sparse skeleton.

    Parameters
    ----------
    model : Weights, path to ``.safetensors``, None or ``(model, card)``
        The weights (read once here when given as a path; None: the shipped default model),
        or an in-memory pair (stand-ins, notebooks).
    core_px, halo_px, border : int, int, str
        Core window side and halo of the tiles (pixels) and what a tile sees beyond the image's
        edge (:func:`cracksurvey.tiling.tile_grid`). Core 1088 and halo 96: 1280² forwards.
    precision : {'auto', 'bf16', 'fp32'}
        ``auto`` is resolved by each worker for its device
        (:func:`cracksurvey.predict.auto_precision`); an explicit bf16 runs bf16 everywhere,
        emulated (and logged) on CPUs without native bf16.
    device : str
        Torch device of the workers; ``auto`` = cuda if the worker sees a GPU, else cpu
        (decided in each worker).
    threshold_px : float, optional
        Crack = distance <= this (pixels); None: the card's calibrated threshold. It travels to
        the tasks as a number; the card is never changed.
    config : EngineConfig
        The Dask execution (workers, scheduler, ...).
    synchronous : bool
        Run tiles in-process, in order, without Dask.

    Raises
    ------
    ModelError
        Weights that cannot be read, do not match their card's checksum, or do not fit its
        architecture (checked here, before any image).

    Use as a context manager (or call :meth:`close`) so the local cluster is shut down.

    Examples
    --------
    >>> with Engine("model.safetensors") as engine:  # doctest: +SKIP
    ...     result = engine.run_image("facade.tif", distance_path="d.tif", mask_path="m.tif")
    """

    def __init__(
        self,
        model: ModelSource = None,
        *,
        core_px: int = 1088,
        halo_px: int = 96,
        border: Border = "image",
        precision: Precision = "auto",
        device: str = "cpu",
        threshold_px: float | None = None,
        config: EngineConfig = EngineConfig(),
        synchronous: bool = False,
    ) -> None:
        self.config = config
        self.core_px = core_px
        self.halo_px, self.border = halo_px, border
        self.precision: Precision = precision
        self.device = device
        self.synchronous = synchronous
        self._model: Weights | tuple[nn.Module, ModelCard]
        if isinstance(model, tuple):
            self._model = model
        else:
            weights = model if isinstance(model, Weights) else read_weights(model)
            # the weights must fit their card's architecture: say so now, not in a worker
            model_from_bytes(weights.data, weights.card, verify=False, source=weights.source)
            self._model = weights
        self.card: ModelCard = (
            self._model[1] if isinstance(self._model, tuple) else self._model.card
        )
        self.threshold_px = float(self.card.threshold_px if threshold_px is None else threshold_px)
        self._client: Any = None
        self._cluster: Any = None
        self._remote_ref: PluginModelRef | None = None
        self._resources: dict[str, float] | None = None
        self._n_slots = 1
        self._torch_threads: int | None = 1
        self._prefetch: _Prefetch | None = None

    # -- cluster ---------------------------------------------------------------------------

    def _ensure_client(self) -> Any:
        if self._client is not None:
            return self._client
        if self.config.scheduler is not None:
            self._client = Client(self.config.scheduler)
            workers = self._client.scheduler_info()["workers"]
            self._n_slots = max(1, sum(w.get("nthreads", 1) for w in workers.values()))
            self._torch_threads = self.config.torch_threads  # None: decided in each worker
            self._resources = task_resources(workers, self.config.gpu_resource)
        else:
            self._cluster, self._n_slots, self._torch_threads = start_local_cluster(self.config)
            self._client = Client(self._cluster)
            self._client.register_plugin(QuickExitPlugin(), name=QuickExitPlugin.name)
        log.info(
            "dask: %d task slot(s), torch threads per task %s, task resources %s",
            self._n_slots,
            self._torch_threads,
            self._resources,
        )
        self._install_model()
        return self._client

    def _install_model(self) -> None:
        """Send the model to every worker once (a worker plugin, :mod:`.worker`)."""
        if isinstance(self._model, Weights):
            sha256 = self.card.sha256 or uuid.uuid4().hex
        else:
            sha256 = f"in-memory-{uuid.uuid4().hex}"
        ref = PluginModelRef(f"cracksurvey-model-{sha256[:16]}-{uuid.uuid4().hex[:8]}", sha256)
        self._client.register_plugin(ModelPlugin(ref, self._model), name=ref.name)
        self._remote_ref = ref

    def _uninstall_model(self) -> None:
        if self._remote_ref is None:
            return
        try:
            self._client.unregister_worker_plugin(self._remote_ref.name)
        except Exception as exc:  # a cluster going away must not hide the run's own outcome
            log.warning("could not unregister the model plugin: %s", exc)
        self._remote_ref = None

    @property
    def client_torch_threads(self) -> int | None:
        """Torch threads for network work in this process while the engine runs (the façade
        semantics, the crack verifier): with a local cluster, the cores its tasks leave free,
        at least one; None (torch's default, every core) when synchronous or with a scheduler
        elsewhere. On two cores whose workers run the next image meanwhile, two threads here
        waited on each other behind the workers: a 4-image photo survey took 16.2 s instead of
        15.2 s (docs/performance.md)."""
        if self.synchronous or self.config.scheduler is not None:
            return None
        workers, threads, torch_threads = local_layout(self.config)
        return max(1, available_cores() - workers * threads * torch_threads)

    def start(self) -> Engine:
        """Start (or connect to) the Dask cluster now rather than at the first image."""
        if not self.synchronous:
            self._ensure_client()
        return self

    def close(self) -> None:
        """Shut down the client and the local cluster (if this engine started them)."""
        self._drop_prefetch()
        if self._client is not None:
            self._uninstall_model()
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one image -------------------------------------------------------------------------

    def _band_spec(self, header: RasterHeader) -> BandSpec:
        if np.dtype(header.dtype) == np.uint8:
            return BandSpec(header.nodata, header.alpha_band)
        with RasterSource(header.path) as source:
            sample = source.read_overview()
        valid = valid_pixels(sample, nodata=header.nodata, alpha_band=header.alpha_band)
        scale = percentile_scale(sample, valid=valid)
        log.info(
            "%s: %s bands scaled from percentiles 2-98: %s",
            header.path,
            header.dtype,
            scale.tolist(),
        )
        return BandSpec(header.nodata, header.alpha_band, scale)

    def _results_synchronous(
        self, header: RasterHeader, tiles: list[Tile], bands: BandSpec
    ) -> Iterator[tuple[Tile, TileResult | None]]:
        torch_threads = self.config.torch_threads or torch.get_num_threads()
        for tile in tiles:
            yield tile_task(
                header,
                tile,
                bands,
                self._model,
                threshold_px=self.threshold_px,
                precision=self.precision,
                torch_threads=torch_threads,
                device=self.device,
            )

    def _submit_tile(
        self,
        header: RasterHeader,
        tile: Tile,
        bands: BandSpec,
        targets: tuple[SharedRaster, SharedRaster] | None = None,
    ) -> Any:
        return self._client.submit(
            tile_task,
            header,
            tile,
            bands,
            self._remote_ref,
            threshold_px=self.threshold_px,
            precision=self.precision,  # "auto" / bf16 support: the worker's device
            torch_threads=self._torch_threads,
            device=self.device,
            targets=targets,
            pure=False,
            retries=self.config.retries,
            resources=self._resources,
        )

    def _results_dask(
        self,
        header: RasterHeader,
        tiles: list[Tile],
        bands: BandSpec,
        next_image: str | Path | None = None,
        targets: tuple[SharedRaster, SharedRaster] | None = None,
    ) -> Iterator[tuple[Tile, TileResult | None]]:
        self._ensure_client()
        max_in_flight = self.config.max_in_flight or 2 * self._n_slots
        carried = self._take_prefetch(header, tiles)  # started while the previous image finished
        todo = iter(tiles[len(carried) :])
        in_flight: set[Any] = set(carried)

        def submit(tile: Tile) -> Any:
            future = self._submit_tile(header, tile, bands, targets)
            in_flight.add(future)
            return future

        first = carried + [
            submit(t) for t in itertools.islice(todo, max(0, max_in_flight - len(carried)))
        ]
        pending = as_completed(first)
        try:
            for future in pending:
                tile_result = future.result()
                in_flight.discard(future)
                future.release()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.add(submit(nxt))
                elif next_image is not None:
                    # Every tile of this image is out: keep the workers busy with the next
                    # image while this one is finished (COGs) and vectorized on the client.
                    self._prefetch_one(next_image, max_in_flight)
                yield tile_result
        finally:
            # On error (or an abandoned generator) do not leave tiles running on the cluster.
            if in_flight:
                self._client.cancel(list(in_flight))
            pending.clear()

    def _tiles(self, header: RasterHeader) -> list[Tile]:
        """The image's tiles in submission order: largest forward first (row-major among
        equals), so the small edge tiles come last and the workers finish an image together."""
        tiles = tile_grid(header.height, header.width, core_px=self.core_px,
                          halo_px=self.halo_px, multiple=self.card.input_multiple,
                          border=self.border)  # fmt: skip
        order = sorted(range(len(tiles)), key=lambda i: (-_forward_px(tiles[i]), i))
        return [tiles[i] for i in order]

    # -- prefetch: the next image's first tiles run while this one is finished -------------

    def _prefetch_one(self, image: str | Path, max_in_flight: int) -> None:
        """Submit one more tile of ``image`` (the image :meth:`run_image` gets next)."""
        pf = self._prefetch
        if pf is None or pf.path != Path(image):
            self._drop_prefetch()
            try:
                header = describe_raster(image)
                bands = self._band_spec(header)
            except Exception:  # the real run reports it, with its own clear error
                pf = _Prefetch(Path(image), None, None, [], [])
            else:
                pf = _Prefetch(
                    Path(image), header, bands, self._tiles(header), [], _file_stat(image)
                )
            self._prefetch = pf
        if (
            pf.header is None
            or pf.bands is None
            or len(pf.futures) >= min(max_in_flight, len(pf.tiles))
        ):
            return
        pf.futures.append(self._submit_tile(pf.header, pf.tiles[len(pf.futures)], pf.bands))

    def _take_prefetch(self, header: RasterHeader, tiles: list[Tile]) -> list[Any]:
        """The futures already running for this image's first tiles (else none)."""
        pf = self._prefetch
        if (
            pf is not None
            and pf.header == header
            and pf.tiles == tiles
            and pf.stat == _file_stat(header.path)
        ):
            self._prefetch = None
            return pf.futures
        self._drop_prefetch()
        return []

    def _release_worker_memory(self) -> None:
        """Workers are idle until the next image: their kept heaps go back to the system
        meanwhile (a millisecond round trip; the COGs and vectors need the memory now)."""
        try:
            self._client.run(release_freed_memory)
        except Exception as exc:  # an optimisation: never the reason a run fails
            log.debug("could not release worker memory: %s", exc)

    def _drop_prefetch(self) -> None:
        """Cancel the next image's tiles started early (it is not the one run next)."""
        pf, self._prefetch = self._prefetch, None
        if pf is not None and pf.futures and self._client is not None:
            self._client.cancel(pf.futures)

    def run_image(
        self,
        image: str | Path,
        *,
        distance_path: str | Path,
        mask_path: str | Path,
        progress: ProgressCallback | None = None,
        georeference: tuple[Affine, str | None] | None = None,
        next_image: str | Path | None = None,
    ) -> ImageResult:
        """Process one image: write its distance and mask COGs, return its skeleton.

        Parameters
        ----------
        image : path of the input raster.
        distance_path, mask_path : output COG paths (written atomically).
        progress : callable, optional
            Called with ``ProgressEvent('tile', n_done, n_total, image=name)`` after each tile
            is written (the CLI shows it as a progress bar).
        georeference : (transform, crs WKT or None), optional
            Georeferencing of the COGs when the survey resolved it beyond the raster's own
            tags (a world file with a .prj, an images.csv gsd, a façade frame, pixel units);
            default: the input raster's transform and CRS.
        next_image : path, optional
            The image this engine will run next. Once every tile of this image has been
            submitted, freed task slots start the next image's first tiles, so the workers
            keep computing while this image's COGs are finished (and, in ``process``, while
            it is vectorized). Ignored by the synchronous engine.

        Raises
        ------
        InputRasterError
            The image cannot be opened or a window cannot be read; no output is left behind,
            and the engine stays usable for the next image.
        """
        start = time.perf_counter()
        header = describe_raster(image)
        bands = self._band_spec(header)
        tiles = self._tiles(header)
        # as this process sees it; each worker decides for its own device (see tile_task)
        precision = effective_precision(self.precision, resolve_device(self.device))
        results: Iterator[tuple[Tile, TileResult | None]] | None = None
        transform, crs = (
            georeference if georeference is not None else (header.transform, header.crs)
        )
        parts: list[TileSkeleton] = []
        like_image = functools.partial(
            TiledRasterWriter,
            height=header.height,
            width=header.width,
            transform=transform,
            crs=crs,
        )
        distance_out = like_image(distance_path, dtype="float32", nodata=float("nan"))
        mask_out = like_image(
            mask_path, dtype="uint8", nodata=MASK_NODATA, overview_resampling="nearest"
        )
        name = Path(image).name
        try:
            with distance_out, mask_out:
                if self.synchronous:
                    results = self._results_synchronous(header, tiles, bands)
                else:
                    targets = _shared_targets(self.config, distance_out, mask_out)
                    results = self._results_dask(header, tiles, bands, next_image, targets)
                for n_done, (tile, result) in enumerate(results, start=1):
                    if result is None:  # all nodata
                        shape = tile.core_shape
                        distance_out.write(tile.core, np.full(shape, np.nan, np.float32))
                        mask_out.write(tile.core, np.full(shape, MASK_NODATA, np.uint8))
                    else:
                        if result.distance_core is None or result.mask_core is None:
                            distance_out.written(tile.core)  # the worker wrote both itself
                            mask_out.written(tile.core)
                        else:
                            distance_out.write(tile.core, result.distance_core)
                            mask_out.write(tile.core, result.mask_core)
                        if len(result.skeleton):
                            parts.append(result.skeleton.shifted(tile.read_row0, tile.read_col0))
                    if progress is not None:
                        progress(ProgressEvent("tile", n_done, len(tiles), image=name))
                if (
                    self._client is not None
                    and self._prefetch is None
                    and header.n_pixels >= RELEASE_AFTER_PX
                ):
                    self._release_worker_memory()
                finish_concurrently(distance_out, mask_out)
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
        if not self.synchronous:
            # the tiles received and written are freed but glibc keeps most of it (a sparse
            # 40000² image left this process at 2.0 GB, 0.6 GB once trimmed)
            release_freed_memory()
        skeleton = TileSkeleton.concatenate(parts)
        skeleton = skeleton.take(np.lexsort((skeleton.cols, skeleton.rows)))
        return ImageResult(
            header=header,
            skeleton=skeleton,
            distance_path=Path(distance_path),
            mask_path=Path(mask_path),
            card=self.card,
            threshold_px=self.threshold_px,
            precision=precision,
            n_tiles=len(tiles),
            seconds=time.perf_counter() - start,
        )


def _shared_targets(
    config: EngineConfig, *writers: TiledRasterWriter
) -> tuple[SharedRaster, SharedRaster] | None:
    """The writers' raw files, when the workers run on this machine (a local cluster) and
    both writers have one: the workers write their cores there themselves."""
    shared = [w.shared for w in writers]
    if config.scheduler is not None or shared[0] is None or shared[1] is None:
        return None
    return shared[0], shared[1]


def run_image(
    image: str | Path,
    *,
    distance_path: str | Path,
    mask_path: str | Path,
    model: ModelSource = None,
    progress: ProgressCallback | None = None,
    **engine_options: Any,
) -> ImageResult:
    """Process one image with a short-lived :class:`Engine` (see :meth:`Engine.run_image`);
    ``engine_options`` are the keyword arguments of :class:`Engine`.

    For many images keep one :class:`Engine` open: its cluster and worker models are reused.
    """
    with Engine(model, **engine_options) as engine:
        return engine.run_image(
            image, distance_path=distance_path, mask_path=mask_path, progress=progress
        )
