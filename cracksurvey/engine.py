"""Engine: run the per-tile function over one image, on Dask or in-process.

The only module that imports Dask. For one image it builds the tile tasks
(:func:`cracksurvey.tiling.tile_grid`), runs them on a ``distributed`` cluster — a
:class:`~distributed.LocalCluster` sized to the machine by default, or an existing scheduler —
and streams the results back (``as_completed``) to a single writer that writes the distance map
and the mask (COGs, window by window) and gathers the sparse skeleton in image coordinates.

Design points:

- **Tasks read their own pixels.** A task gets the image path and a
  :class:`~cracksurvey.tiling.Tile` and reads its window inside the worker; no pixel array
  travels from the client.
- **One model per worker, loaded once; no shared filesystem needed.** The weights travel as
  the bytes of the safetensors file (or, for an in-memory ``(model, card)`` pair, the pickled
  pair) inside a Dask worker plugin: the scheduler sends it once to every worker, including
  workers that join later or replace a dead one. A worker builds the model on first use and
  caches it, keyed by (weights SHA-256, device).
- **Device per worker.** ``device='auto'`` is resolved in each worker (cuda if that worker sees
  a GPU, else cpu), and so is bf16 support. When the cluster has workers that advertise a
  ``GPU`` resource (``dask worker --resources GPU=1``), tile tasks (the model work) are
  submitted with ``resources={'GPU': 1}`` and run only there.
- **Faults.** A worker that dies mid-task is replaced by its nanny (LocalCluster, ``dask
  worker``) and the scheduler reruns its tasks elsewhere; a task that raises is retried
  ``retries`` times before its image fails.
- **Torch threads are set explicitly** in the worker (Dask sets OMP/MKL threads to 1 in worker
  processes): ``cores // (workers * threads_per_worker)`` per task by default.
- **Backpressure.** At most ``max_in_flight`` tiles are submitted at any time, so memory is flat
  whatever the image size.
- ``synchronous=True`` runs the very same task function in-process, in tile order, without Dask
  (tests, debugging).
- **Memory kept between tiles.** Local workers start with glibc's allocator told to keep freed
  memory (:data:`cracksurvey.predict.HEAP_ENVIRON`, :func:`worker_environ`): otherwise every
  forward page-faults its activations in again (0.98 vs 0.70 s for a 1280 x 1280 forward of the
  shipped model). A worker then holds its working set, about 1 GB, until an image of
  :data:`RELEASE_AFTER_PX` or more ends with nothing queued.

Default layout (:func:`default_layout`): one single-threaded worker process per core (torch 1
thread each), capped so that each worker has about 3 GB of RAM (the working set of a 1280 x 1280
fp32 forward of the shipped model is about 1 GB; wider models need more). Measured with
workflows/benchmark.py on 2 cores shared with a training run (2048 x 2048 image, random UNet16
width 0.25, fp32): 2 workers x 1 task 0.177 MP/s, 1 worker x 2 tasks (torch 1 thread each)
0.161 MP/s, 1 worker x 1 task with torch on 2 threads 0.122 MP/s; peak RSS 2.4 / 2.1 / 1.5 GB. Task-level parallelism keeps cores busy when the machine is shared (multi-threaded
torch stalls on a busy core) and overlaps one tile's reading/skeleton with another's forward;
separate processes also run the numpy parts without sharing a GIL. On a quiet machine the three
are within about 10 % (MEASURED.md).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from affine import Affine
from distributed.diagnostics.plugin import WorkerPlugin
from rasterio.crs import CRS
from torch import nn

from .errors import ModelError
from .io.raster import (
    TILE_READ_CACHE_BYTES,
    RasterInfo,
    RasterSource,
    TiledRasterWriter,
    describe_raster,
    finish_concurrently,
)
from .model import ModelCard, default_weights_path, load_model, model_from_bytes, read_card
from .predict import (
    HEAP_ENVIRON,
    Precision,
    effective_precision,
    keep_freed_memory,
    percentile_scale,
    prepare_bands,
    release_freed_memory,
    valid_pixels,
)
from .skeleton import TileSkeleton
from .tiling import MASK_NODATA, Tile, TileResult, process_tile, read_window_reflect, tile_grid

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""``on_tile_done(n_done, n_total)``, called in the client after each tile is written."""


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_layout(
    cores: int | None = None, memory_bytes: int | None = None
) -> tuple[int, int, int]:
    """``(n_workers, threads_per_worker, torch_threads)`` for a local cluster on this machine.

    One single-task worker process per core, at most one per ~3 GB of RAM, torch threads
    sharing the cores among the workers (see the module docstring for the measurements).

    >>> default_layout(2, 24 * 2**30)
    (2, 1, 1)
    >>> default_layout(16, 16 * 2**30)
    (5, 1, 3)
    """
    cores = cores or available_cores()
    if memory_bytes is None:
        import psutil

        memory_bytes = psutil.virtual_memory().total
    n_workers = max(1, min(cores, int(memory_bytes // (3 * 2**30))))
    return n_workers, 1, max(1, cores // n_workers)


@contextmanager
def worker_environ() -> Iterator[None]:
    """Worker processes started inside this context get :data:`HEAP_ENVIRON` (glibc's
    allocator settings must be there at process start; each nanny keeps them for the restarts
    it does). Wrap the creation of a ``LocalCluster`` in it.

    Dask's nanny puts these variables in this process's ``os.environ`` to spawn a worker; they
    are put back as they were on exit, so programs this process starts later do not inherit
    them (a nanny restarting a dead worker sets them again)."""
    import dask

    key = "distributed.nanny.pre-spawn-environ"
    before = {k: os.environ.get(k) for k in HEAP_ENVIRON}
    try:
        with dask.config.set({key: {**dask.config.get(key), **HEAP_ENVIRON}}):
            yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass(frozen=True)
class EngineConfig:
    """Knobs of the engine (none of them changes results beyond floating-point noise).

    Attributes
    ----------
    tile_px : int
        Core window side (pixels, rounded up to the input multiple). With ``halo_px`` = 96 the
        default 1088 gives 1280 x 1280 forwards (1.6 MP; about 0.8 GB per worker for the
        shipped 1/8-width model in fp32), the fastest per core pixel measured here.
    halo_px : int
        Context kept around each core (pixels, >= 64 recommended, rounded up to 32).
    precision : {'auto', 'bf16', 'fp32'}
        ``auto`` is resolved by each worker for its device
        (:func:`cracksurvey.predict.auto_precision`); bf16 falls back to fp32 on CPUs without
        native bf16 (logged).
    n_workers, threads_per_worker : int or None
        Local cluster layout; None = :func:`default_layout`.
    torch_threads : int or None
        Torch threads per running task. None: the cores divided among the task slots of the
        local cluster; unchanged in synchronous mode; on an external scheduler, each worker's
        cores divided by its task slots.
    processes : bool
        Local cluster workers as processes (True) or threads of this process (False).
    max_in_flight : int or None
        Tiles submitted but not yet written; None = 2 per task slot.
    device : str
        Torch device of the workers; ``auto`` = cuda if the worker sees a GPU, else cpu
        (decided in each worker).
    retries : int
        Extra attempts for a tile task that raised (e.g. a network filesystem hiccup or a GPU
        out of memory); tasks lost with a dead worker are rerun by the scheduler regardless.
    gpu_resource : str
        Dask resource name that GPU workers advertise; when any worker does, tile tasks need
        one unit of it.
    """

    tile_px: int = 1088
    halo_px: int = 96
    precision: Precision = "auto"
    n_workers: int | None = None
    threads_per_worker: int | None = None
    torch_threads: int | None = None
    processes: bool = True
    max_in_flight: int | None = None
    device: str = "cpu"
    retries: int = 1
    gpu_resource: str = "GPU"


@dataclass(frozen=True)
class ImageResult:
    """What :meth:`Engine.run_image` produced for one image.

    Attributes
    ----------
    info : RasterInfo
        The input image (size, transform, CRS).
    skeleton : TileSkeleton
        Skeleton pixels of the whole image in image (row, col) indices, row-major order.
    distance_path, mask_path : Path
        The COGs written.
    card : ModelCard
    precision : {'bf16', 'fp32'}
        The precision that actually ran.
    n_tiles : int
    seconds : float
        Wall time of the image.
    """

    info: RasterInfo
    skeleton: TileSkeleton
    distance_path: Path
    mask_path: Path
    card: ModelCard
    precision: Precision
    n_tiles: int
    seconds: float

    @property
    def transform(self) -> Affine:
        return self.info.transform

    @property
    def crs(self) -> CRS | None:
        return self.info.crs


# --------------------------------------------------------------------------------------------
# Worker side


@dataclass(frozen=True)
class _WeightsRef:
    """Weights on disk, loaded once per worker process."""

    path: str
    sha256: str


@dataclass(frozen=True)
class _BandSpec:
    """How to turn an image's bands into RGB (same for every tile of the image)."""

    nodata: float | None
    alpha_band: int | None
    scale: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class _WeightsBytes:
    """The content of a safetensors file and its card (what a remote worker needs)."""

    data: bytes = field(repr=False)
    card: ModelCard


@dataclass(frozen=True)
class _PluginModelRef:
    """A model installed on every worker by the :class:`_ModelPlugin` called ``name``."""

    name: str
    sha256: str


_MODELS: dict[tuple[str, str], tuple[nn.Module, ModelCard]] = {}
_MODELS_LOCK = threading.Lock()
_PAYLOADS: dict[str, Any] = {}  # plugin name -> _WeightsBytes or (model, card), in workers


class _ModelPlugin(WorkerPlugin):
    """Carries the model to every worker once, also to workers that join or restart later."""

    def __init__(
        self, ref: _PluginModelRef, payload: _WeightsBytes | tuple[nn.Module, ModelCard]
    ) -> None:
        self.name = ref.name
        self.ref = ref
        self.payload = payload

    def setup(self, worker: Any) -> None:
        _PAYLOADS[self.name] = self.payload

    def teardown(self, worker: Any) -> None:
        _PAYLOADS.pop(self.name, None)
        # an in-memory model goes with its plugin; weights files stay cached for the next run
        if isinstance(self.payload, tuple):
            with _MODELS_LOCK:
                for key in [k for k in _MODELS if k[0] == self.ref.sha256]:
                    del _MODELS[key]


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if this process sees a GPU, else ``mps``, else ``cpu``.

    Other values are returned unchanged. On a cluster this runs in each worker, so a mixed
    cluster uses its GPUs where they are.
    """
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _worker_model(ref: Any, device: str) -> tuple[nn.Module, ModelCard]:
    """The model of ``ref`` on ``device``, built once per process (worker) and cached."""
    if isinstance(ref, tuple):
        return ref  # an in-memory (model, card) pair (synchronous mode)
    key = (ref.sha256, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = _build_worker_model(ref, device)
        return _MODELS[key]


def _build_worker_model(ref: Any, device: str) -> tuple[nn.Module, ModelCard]:
    if isinstance(ref, _WeightsRef):
        log.info("loading %s on %s", ref.path, device)
        return load_model(ref.path, device=device)
    payload = _PAYLOADS.get(ref.name)
    if payload is None:
        raise RuntimeError(f"model plugin {ref.name} is not installed on this worker")
    if isinstance(payload, tuple):
        return payload
    log.info("building %s on %s", payload.card.model_id, device)
    model = model_from_bytes(
        payload.data, payload.card, device=device, source=payload.card.model_id
    )
    return model, payload.card


def _task_resources(workers: dict[str, Any], resource: str) -> dict[str, float] | None:
    """``{resource: 1}`` when some worker advertises ``resource`` (GPU workers), else None.

    >>> _task_resources({"a": {"resources": {"GPU": 1}}, "b": {"resources": {}}}, "GPU")
    {'GPU': 1}
    >>> _task_resources({"a": {}}, "GPU") is None
    True
    """
    if any(w.get("resources", {}).get(resource, 0) > 0 for w in workers.values()):
        return {resource: 1}
    return None


def _set_torch_threads(n: int | None) -> None:
    """Set torch's intra-op threads; None = this machine's cores / the worker's task slots."""
    if n is None:
        from distributed import get_worker

        try:
            slots = get_worker().state.nthreads
        except ValueError:  # not in a worker
            slots = 1
        n = max(1, available_cores() // slots)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


# Drivers whose files are not tiled: GDAL decodes a JPEG window from the top of the image, so
# every tile of a façade photo re-decodes most of it (measured: 0.2 s per 1 MP tile of a 12 MP
# JPEG, a quarter of the model's time). Such images, up to WHOLE_DECODE_MAX_PX, are decoded once
# per worker and the tiles sliced from memory; tiled GeoTIFFs of any size are read by window.
STREAM_DRIVERS = frozenset({"JPEG", "PNG"})
WHOLE_DECODE_MAX_PX = 64_000_000
_DECODED: dict[tuple[str, int, int], np.ndarray] = {}
_DECODED_LOCK = threading.Lock()

RELEASE_AFTER_PX = 64_000_000
"""After an image this large, with nothing queued, idle workers give their kept heaps back
while the client finishes the image (the 16384² benchmark: 2.7 GB peak with it, 3.4 GB
without); after smaller ones they keep them: the next image's first forward would page-fault
them in again (+0.25 s per worker)."""


def _read_tile(info: RasterInfo, tile: Tile) -> np.ndarray:
    """The tile's read window (core + halo, reflect-padded at the image borders)."""
    stat = os.stat(info.path)
    key = (info.path, stat.st_mtime_ns, stat.st_size)
    with _DECODED_LOCK:
        whole = _DECODED.get(key)
        if whole is None:
            with RasterSource(info.path, cache_bytes=TILE_READ_CACHE_BYTES) as source:
                if source.driver not in STREAM_DRIVERS or info.n_pixels > WHOLE_DECODE_MAX_PX:
                    return read_window_reflect(source.read, tile.read, info.height, info.width)
                whole = source.read(0, info.height, 0, info.width)
            _DECODED.clear()  # one decoded image per worker
            _DECODED[key] = whole

    def sliced(row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        return whole[:, row0:row1, col0:col1]

    return read_window_reflect(sliced, tile.read, info.height, info.width)


def _tile_task(
    info: RasterInfo,
    tile: Tile,
    bands: _BandSpec,
    model_ref: Any,
    *,
    precision: Precision,
    torch_threads: int | None,
    device: str,
) -> tuple[Tile, TileResult | None]:
    """Read, predict and post-process one tile (runs in a worker, or in-process).

    Returns ``(tile, None)`` when the whole core is nodata (no forward pass).
    """
    _set_torch_threads(torch_threads)
    keep_freed_memory()  # no page faults on every tile's activations (see its docstring)
    device = resolve_device(device)
    precision = effective_precision(precision, device)
    raw = _read_tile(info, tile)
    valid = valid_pixels(raw, nodata=bands.nodata, alpha_band=bands.alpha_band)
    if not valid[tile.core_in_read].any():
        return tile, None
    rgb, valid = prepare_bands(
        raw, nodata=bands.nodata, alpha_band=bands.alpha_band, scale=bands.scale
    )
    del raw
    model, card = _worker_model(model_ref, device)
    result = process_tile(
        rgb,
        model,
        card,
        core=tile.core_in_read,
        precision=precision,
        valid=None if valid.all() else valid,
        device=device,
    )
    # The body map stays in the worker: the writer needs distance, mask and skeleton only.
    return tile, TileResult(result.distance_core, None, result.mask_core, result.skeleton)


# --------------------------------------------------------------------------------------------
# Client side


ModelSource = str | Path | None | tuple[nn.Module, ModelCard]


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
    info: RasterInfo | None  # None: the image could not be described; nothing submitted
    bands: _BandSpec | None
    tiles: list[Tile]
    futures: list[Any]
    stat: tuple[int, int] | None = None  # (mtime_ns, size) when described


class Engine:
    """Runs images through tile -> model -> stitched COGs + sparse skeleton.

    Parameters
    ----------
    model : path to ``.safetensors``, None (the shipped default), or an in-memory
        ``(model, card)`` pair (stand-ins, notebooks).
    config : EngineConfig
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``). Default: a LocalCluster
        created on first use, sized by ``config``.
    synchronous : bool
        Run tiles in-process, in order, without Dask.

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
        config: EngineConfig = EngineConfig(),
        scheduler: str | None = None,
        synchronous: bool = False,
    ) -> None:
        self.config = config
        self.scheduler = scheduler
        self.synchronous = synchronous
        if isinstance(model, tuple):
            self._model_ref: Any = model
            self.card: ModelCard = model[1]
        else:
            path = Path(model) if model is not None else default_weights_path()
            path = path.with_suffix(".safetensors")
            if not path.exists():
                raise ModelError(
                    f"{path}: weights file not found; pass --weights PATH to a .safetensors file"
                )
            self.card = read_card(path)
            self._model_ref = _WeightsRef(str(path.resolve()), self.card.sha256)
        self._client: Any = None
        self._cluster: Any = None
        self._remote_ref: _PluginModelRef | None = None
        self._resources: dict[str, float] | None = None
        self._n_slots = 1
        self._torch_threads: int | None = 1
        self._prefetch: _Prefetch | None = None

    # -- cluster ---------------------------------------------------------------------------

    def _layout(self) -> tuple[int, int, int]:
        n_workers, threads, torch_threads = default_layout()
        cfg = self.config
        n_workers = cfg.n_workers or n_workers
        threads = cfg.threads_per_worker or threads
        if cfg.torch_threads:
            torch_threads = cfg.torch_threads
        elif cfg.n_workers or cfg.threads_per_worker:
            torch_threads = max(1, available_cores() // (n_workers * threads))
        return n_workers, threads, torch_threads

    def _ensure_client(self) -> Any:
        if self._client is not None:
            return self._client
        from distributed import Client

        if self.scheduler is not None:
            self._client = Client(self.scheduler)
            workers = self._client.scheduler_info()["workers"]
            self._n_slots = max(1, sum(w.get("nthreads", 1) for w in workers.values()))
            self._torch_threads = self.config.torch_threads  # None: decided in each worker
            self._resources = _task_resources(workers, self.config.gpu_resource)
        else:
            self._client = Client(self._start_local_cluster())
        log.info(
            "dask: %d task slot(s), torch threads per task %s, task resources %s",
            self._n_slots,
            self._torch_threads,
            self._resources,
        )
        self._install_model()
        return self._client

    def _start_local_cluster(self) -> Any:
        from distributed import LocalCluster

        n_workers, threads, torch_threads = self._layout()
        with worker_environ():
            self._cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads,
                processes=self.config.processes,
                dashboard_address=None,
                # the scheduler's health/metrics HTTP server still starts: any free port, so
                # concurrent clusters on one machine do not warn about port 8787
                scheduler_kwargs={"dashboard_address": ":0"},
                silence_logs=logging.WARNING,
            )
        self._n_slots = n_workers * threads
        self._torch_threads = torch_threads
        return self._cluster

    def _install_model(self) -> None:
        """Send the model to every worker once (a worker plugin; see the module docstring)."""
        source = self._model_ref
        if isinstance(source, _WeightsRef):
            payload: Any = _WeightsBytes(Path(source.path).read_bytes(), self.card)
            sha256 = source.sha256
        else:
            payload, sha256 = source, f"in-memory-{uuid.uuid4().hex}"
        ref = _PluginModelRef(f"cracksurvey-model-{sha256[:16]}-{uuid.uuid4().hex[:8]}", sha256)
        self._client.register_plugin(_ModelPlugin(ref, payload), name=ref.name)
        self._remote_ref = ref

    def _uninstall_model(self) -> None:
        if self._remote_ref is None:
            return
        try:
            self._client.unregister_worker_plugin(self._remote_ref.name)
        except Exception as exc:  # a cluster going away must not hide the run's own outcome
            log.warning("could not unregister the model plugin: %s", exc)
        self._remote_ref = None

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

    def _band_spec(self, info: RasterInfo) -> _BandSpec:
        if np.dtype(info.dtype) == np.uint8:
            return _BandSpec(info.nodata, info.alpha_band)
        with RasterSource(info.path) as source:
            sample = source.read_overview()
        valid = valid_pixels(sample, nodata=info.nodata, alpha_band=info.alpha_band)
        scale = percentile_scale(sample, valid=valid)
        log.info(
            "%s: %s bands scaled from percentiles 2-98: %s", info.path, info.dtype, scale.tolist()
        )
        return _BandSpec(info.nodata, info.alpha_band, scale)

    def _results_synchronous(
        self, info: RasterInfo, tiles: list[Tile], bands: _BandSpec, precision: Precision
    ) -> Iterator[tuple[Tile, TileResult | None]]:
        torch_threads = self.config.torch_threads or torch.get_num_threads()
        for tile in tiles:
            yield _tile_task(
                info,
                tile,
                bands,
                self._model_ref,
                precision=precision,
                torch_threads=torch_threads,
                device=self.config.device,
            )

    def _submit_tile(self, info: RasterInfo, tile: Tile, bands: _BandSpec) -> Any:
        return self._client.submit(
            _tile_task,
            info,
            tile,
            bands,
            self._remote_ref,
            precision=self.config.precision,  # "auto" / bf16 support: the worker's device
            torch_threads=self._torch_threads,
            device=self.config.device,
            pure=False,
            retries=self.config.retries,
            resources=self._resources,
        )

    def _results_dask(
        self,
        info: RasterInfo,
        tiles: list[Tile],
        bands: _BandSpec,
        precision: Precision,
        next_image: str | Path | None = None,
    ) -> Iterator[tuple[Tile, TileResult | None]]:
        from distributed import as_completed

        self._ensure_client()
        max_in_flight = self.config.max_in_flight or 2 * self._n_slots
        carried = self._take_prefetch(info, tiles)  # started while the previous image finished
        todo = iter(tiles[len(carried):])
        in_flight: set[Any] = set(carried)

        def submit(tile: Tile) -> Any:
            future = self._submit_tile(info, tile, bands)
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

    def _tiles(self, info: RasterInfo) -> list[Tile]:
        """The image's tiles in submission order: largest forward first (row-major among
        equals), so the small edge tiles come last and the workers finish an image together."""
        tiles = tile_grid(info.height, info.width, tile_px=self.config.tile_px,
                          halo_px=self.config.halo_px, multiple=self.card.input_multiple)
        order = sorted(range(len(tiles)), key=lambda i: (-_forward_px(tiles[i]), i))
        return [tiles[i] for i in order]

    # -- prefetch: the next image's first tiles run while this one is finished -------------

    def _prefetch_one(self, image: str | Path, max_in_flight: int) -> None:
        """Submit one more tile of ``image`` (the image :meth:`run_image` gets next)."""
        pf = self._prefetch
        if pf is None or pf.path != Path(image):
            self._drop_prefetch()
            try:
                info = describe_raster(image)
                bands = self._band_spec(info)
            except Exception:  # the real run reports it, with its own clear error
                pf = _Prefetch(Path(image), None, None, [], [])
            else:
                pf = _Prefetch(Path(image), info, bands, self._tiles(info), [], _file_stat(image))
            self._prefetch = pf
        if pf.info is None or len(pf.futures) >= min(max_in_flight, len(pf.tiles)):
            return
        pf.futures.append(self._submit_tile(pf.info, pf.tiles[len(pf.futures)], pf.bands))

    def _take_prefetch(self, info: RasterInfo, tiles: list[Tile]) -> list[Any]:
        """The futures already running for this image's first tiles (else none)."""
        pf = self._prefetch
        if pf is not None and pf.info == info and pf.tiles == tiles and pf.stat == _file_stat(info.path):
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
        on_tile_done: ProgressCallback | None = None,
        georeference: tuple[Affine, str | None] | None = None,
        next_image: str | Path | None = None,
    ) -> ImageResult:
        """Process one image: write its distance and mask COGs, return its skeleton.

        Parameters
        ----------
        image : path of the input raster.
        distance_path, mask_path : output COG paths (written atomically).
        on_tile_done : callable ``(n_done, n_total)``, optional
            Called after each tile is written (wrap it in a tqdm bar in the CLI).
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
        info = describe_raster(image)
        bands = self._band_spec(info)
        cfg = self.config
        tiles = self._tiles(info)
        # as this process sees it; each worker decides for its own device (see _tile_task)
        precision = effective_precision(cfg.precision, resolve_device(cfg.device))
        results = (
            self._results_synchronous(info, tiles, bands, precision)
            if self.synchronous
            else self._results_dask(info, tiles, bands, precision, next_image)
        )
        transform, crs = georeference if georeference is not None else (info.transform, info.crs)
        common = dict(height=info.height, width=info.width, transform=transform, crs=crs)
        parts: list[TileSkeleton] = []
        distance_out = TiledRasterWriter(
            distance_path, dtype="float32", nodata=float("nan"), **common
        )
        mask_out = TiledRasterWriter(
            mask_path, dtype="uint8", nodata=MASK_NODATA, overview_resampling="nearest", **common
        )
        try:
            with distance_out, mask_out:
                for n_done, (tile, result) in enumerate(results, start=1):
                    if result is None:  # all nodata
                        shape = tile.core_shape
                        distance_out.write(tile.core, np.full(shape, np.nan, np.float32))
                        mask_out.write(tile.core, np.full(shape, MASK_NODATA, np.uint8))
                    else:
                        distance_out.write(tile.core, result.distance_core)
                        mask_out.write(tile.core, result.mask_core)
                        if len(result.skeleton):
                            parts.append(result.skeleton.shifted(tile.read_row0, tile.read_col0))
                    if on_tile_done is not None:
                        on_tile_done(n_done, len(tiles))
                if (self._client is not None and self._prefetch is None
                        and info.n_pixels >= RELEASE_AFTER_PX):
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
        order = np.lexsort((skeleton.cols, skeleton.rows))
        skeleton = TileSkeleton(
            skeleton.rows[order],
            skeleton.cols[order],
            skeleton.width_px[order],
            skeleton.distance_px[order],
        )
        return ImageResult(
            info=info,
            skeleton=skeleton,
            distance_path=Path(distance_path),
            mask_path=Path(mask_path),
            card=self.card,
            precision=precision,
            n_tiles=len(tiles),
            seconds=time.perf_counter() - start,
        )


def run_image(
    image: str | Path,
    *,
    distance_path: str | Path,
    mask_path: str | Path,
    model: ModelSource = None,
    config: EngineConfig = EngineConfig(),
    scheduler: str | None = None,
    synchronous: bool = False,
    on_tile_done: ProgressCallback | None = None,
) -> ImageResult:
    """Process one image with a short-lived :class:`Engine` (see :meth:`Engine.run_image`).

    For many images keep one :class:`Engine` open: its cluster and worker models are reused.
    """
    with Engine(model, config=config, scheduler=scheduler, synchronous=synchronous) as engine:
        return engine.run_image(
            image, distance_path=distance_path, mask_path=mask_path, on_tile_done=on_tile_done
        )
