"""Worker side of the engine: the model on each worker, and the task that runs one tile.

:func:`tile_task` reads its tile's window itself (no pixel array travels from the client),
prepares the bands, runs :func:`cracksurvey.tiling.process_tile` and returns the core's
distance, mask and sparse skeleton. On a cluster of this machine it writes the distance and mask
into the writers' raw temporary files itself (:class:`cracksurvey.io.cog.SharedRaster`) and
returns only the skeleton. It runs in a Dask worker, or in the client's process when the engine
is synchronous.

The model reaches a worker once, as the bytes of its safetensors file and its card
(:class:`cracksurvey.model.Weights`), inside a Dask worker plugin (:class:`ModelPlugin`): the
scheduler sends it to every worker, including workers that join later or replace a dead one. A
worker builds the network on first use and keeps it, keyed by (weights SHA-256, device). An
in-memory ``(module, card)`` pair (stand-in models, notebooks) travels pickled instead.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import multiprocessing
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin
from torch import nn

from cracksurvey.config import Precision
from cracksurvey.engine.cluster import available_cores
from cracksurvey.engine.decoded import image_key, release_shared, shared_decode
from cracksurvey.io.cog import SharedRaster
from cracksurvey.io.raster import TILE_READ_CACHE_BYTES, RasterHeader, RasterSource
from cracksurvey.model import ModelCard, Weights, model_from_bytes
from cracksurvey.predict import (
    effective_precision,
    keep_freed_memory,
    prepare_bands,
    resolve_device,
    valid_pixels,
)
from cracksurvey.tiling import Tile, TileResult, process_tile, read_window_reflect

__all__ = ["BandSpec", "ModelPlugin", "PluginModelRef", "QuickExitPlugin", "tile_task"]

log = logging.getLogger(__name__)

#: What a task gets to find its model: the plugin's reference, or (synchronous engine) the
#: weights or the in-memory pair themselves.
ModelRef = Any

_MODELS: dict[tuple[str, str], tuple[nn.Module, ModelCard]] = {}
_MODELS_LOCK = threading.Lock()
_PAYLOADS: dict[str, Weights | tuple[nn.Module, ModelCard]] = {}  # plugin name -> payload

# Drivers whose files are not tiled: GDAL decodes a JPEG window from the top of the image, so
# every tile of a façade photo re-decodes most of it (a quarter of the model's time per tile of
# a 12 MP JPEG). Such images, up to WHOLE_DECODE_MAX_PX, are decoded once per machine (8-bit:
# engine.decoded, shared by the local workers) and the tiles sliced from memory; tiled
# GeoTIFFs of any size are read by window.
STREAM_DRIVERS = frozenset({"JPEG", "PNG"})
WHOLE_DECODE_MAX_PX = 64_000_000
_DECODED: dict[tuple[str, int, int], np.ndarray] = {}
_DECODED_LOCK = threading.Lock()


@dataclass(frozen=True)
class BandSpec:
    """How to turn an image's bands into RGB (same for every tile of the image)."""

    nodata: float | None
    alpha_band: int | None
    scale: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PluginModelRef:
    """A model installed on every worker by the :class:`ModelPlugin` called ``name``."""

    name: str
    sha256: str


class ModelPlugin(WorkerPlugin):
    """Carries the model to every worker once, also to workers that join or restart later."""

    def __init__(self, ref: PluginModelRef, payload: Weights | tuple[nn.Module, ModelCard]) -> None:
        self.name = ref.name
        self.ref = ref
        self.payload = payload

    def setup(self, worker: Any) -> None:
        _PAYLOADS[self.name] = self.payload

    def teardown(self, worker: Any) -> None:
        _PAYLOADS.pop(self.name, None)
        # the engine is done with this worker: the decoded images it shares go (on any
        # cluster; a worker of a cluster started elsewhere may never run its exit handlers)
        with _DECODED_LOCK:
            _DECODED.clear()
            release_shared()
        # an in-memory model goes with its plugin; built weights stay cached for the next run
        if isinstance(self.payload, tuple):
            with _MODELS_LOCK:
                for key in [k for k in _MODELS if k[0] == self.ref.sha256]:
                    del _MODELS[key]


_CLOSED_CLEANLY = False


def _exit_now_if_closed() -> None:
    """At interpreter exit of a worker process that closed cleanly: flush and leave at once."""
    if not _CLOSED_CLEANLY:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


class QuickExitPlugin(WorkerPlugin):
    """Local worker processes skip the interpreter's teardown once they have closed cleanly.

    A worker that has closed (its tasks done, its results handed over, its scheduler
    connection shut) still spends a long time in Python's finalization (torch's modules and
    the kept heap) before its process ends, and the run waits for that at its end (the
    measured cost is in docs/history.md, "Benchmarks"). After a clean close
    (:meth:`teardown`) the process flushes its logs and output and exits with status 0 at the
    first exit handler. A worker that exits any other way (a crash, an error) takes the normal
    path with its own status. Only the engine's own local cluster installs it, and it does
    nothing in a worker that is a thread of the client's process.
    """

    name = "cracksurvey-quick-exit"

    def setup(self, worker: Any) -> None:
        if multiprocessing.parent_process() is not None:  # a worker process, not a thread
            atexit.register(_exit_now_if_closed)  # last registered: runs first

    def teardown(self, worker: Any) -> None:
        global _CLOSED_CLEANLY
        release_shared()  # its exit skips the exit handler that would
        _CLOSED_CLEANLY = True


def worker_model(ref: ModelRef, device: str) -> tuple[nn.Module, ModelCard]:
    """The model of ``ref`` on ``device``, built once per process (worker) and kept."""
    if isinstance(ref, tuple):
        return ref  # an in-memory (model, card) pair (synchronous engine)
    payload = ref if isinstance(ref, Weights) else _PAYLOADS.get(ref.name)
    if payload is None:
        raise RuntimeError(f"model plugin {ref.name} is not installed on this worker")
    if isinstance(payload, tuple):
        return payload
    key = (payload.card.sha256 or hashlib.sha256(payload.data).hexdigest(), device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            log.info("building %s on %s", payload.card.model_id, device)
            model = model_from_bytes(
                payload.data, payload.card, device=device, verify=False, source=payload.source
            )
            _MODELS[key] = (model, payload.card)
        return _MODELS[key]


def _set_torch_threads(n: int | None) -> None:
    """Set torch's intra-op threads; None = this machine's cores / the worker's task slots."""
    if n is None:
        try:
            slots = get_worker().state.nthreads
        except ValueError:  # not in a worker
            slots = 1
        n = max(1, available_cores() // slots)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def read_tile(header: RasterHeader, tile: Tile) -> np.ndarray:
    """The tile's read window (core + halo, reflect-padded at the image borders)."""
    key = image_key(header.path)
    with _DECODED_LOCK:
        whole = _DECODED.get(key)
        if whole is None:
            with RasterSource(header.path, cache_bytes=TILE_READ_CACHE_BYTES) as source:
                if source.driver not in STREAM_DRIVERS or header.n_pixels > WHOLE_DECODE_MAX_PX:
                    return read_window_reflect(source.read, tile.read, header.height, header.width)

                def decode() -> np.ndarray:
                    return source.read(0, header.height, 0, header.width)

                if np.dtype(header.dtype) == np.uint8:  # one decode per machine
                    shape = (header.band_count, header.height, header.width)
                    whole = shared_decode(repr(key), shape, decode)
                else:  # a 16-bit PNG: each worker its own
                    whole = decode()
            _DECODED.clear()  # one decoded image per worker
            _DECODED[key] = whole
            release_shared(keep_newest=2)  # the previous image's file: see release_shared

    def sliced(row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        return whole[:, row0:row1, col0:col1]

    return read_window_reflect(sliced, tile.read, header.height, header.width)


def tile_task(
    header: RasterHeader,
    tile: Tile,
    bands: BandSpec,
    model_ref: ModelRef,
    *,
    threshold_px: float,
    precision: Precision,
    torch_threads: int | None,
    device: str,
    targets: tuple[SharedRaster, SharedRaster] | None = None,
) -> tuple[Tile, TileResult | None]:
    """Read, predict and post-process one tile (runs in a worker, or in-process).

    Returns ``(tile, None)`` when the whole core is nodata (no forward pass). With ``targets``
    (the distance and mask writers' raw files), the core's distance and mask go there and the
    result carries None for them: no 6 MB hand-over per tile.
    """
    _set_torch_threads(torch_threads)
    keep_freed_memory()  # no page faults on every tile's activations (see its docstring)
    device = resolve_device(device)
    precision = effective_precision(precision, device)
    raw = read_tile(header, tile)
    valid = valid_pixels(raw, nodata=bands.nodata, alpha_band=bands.alpha_band)
    if not valid[tile.core_in_read].any():
        return tile, None
    rgb, valid = prepare_bands(
        raw, nodata=bands.nodata, alpha_band=bands.alpha_band, scale=bands.scale
    )
    del raw
    model, card = worker_model(model_ref, device)
    result = process_tile(
        rgb,
        model,
        card,
        core=tile.core_in_read,
        threshold_px=threshold_px,
        precision=precision,
        valid=None if valid.all() else valid,
        device=device,
        origin=(tile.read_row0, tile.read_col0),
        image_size=(header.height, header.width),
    )
    # The body map stays in the worker: the writer needs distance, mask and skeleton only.
    if targets is None:
        return tile, TileResult(result.distance_core, None, result.mask_core, result.skeleton)
    assert result.distance_core is not None and result.mask_core is not None
    targets[0].write(tile.core, result.distance_core)
    targets[1].write(tile.core, result.mask_core)
    return tile, TileResult(None, None, None, result.skeleton)
