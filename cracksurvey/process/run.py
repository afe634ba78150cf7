"""The process tool: a survey directory in, crack layers, rasters and summaries out."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
from torch import nn

from cracksurvey.config import ProcessConfig
from cracksurvey.damage import load_damage_scale
from cracksurvey.engine import Engine
from cracksurvey.errors import CrackSurveyError, OutputWriteError, RunInterrupted
from cracksurvey.georef import Georef
from cracksurvey.io.cache import CACHE_DIR, ImageCache, PredictionCache
from cracksurvey.io.lock import RunLock
from cracksurvey.io.outputs import RASTER_DIR, check_output_dir, clear_previous_outputs
from cracksurvey.io.survey_files import discover_survey, hash_file
from cracksurvey.model import ModelCard, Weights, read_weights
from cracksurvey.predict import resolve_device, torch_threads
from cracksurvey.process.facade import SemanticsModel
from cracksurvey.process.images import ImageLayers, ImageRun
from cracksurvey.process.outcome import (
    ImageOutcome,
    RunSummary,
    Timings,
    failed,
    one_line,
    unprocessable,
)
from cracksurvey.process.outputs import write_outputs
from cracksurvey.progress import ProgressCallback, ProgressEvent
from cracksurvey.summary import footprints_in
from cracksurvey.survey import ImageRecord

__all__ = ["process_survey"]

#: A model for :func:`process_survey`: a weights path, an in-memory ``(model, card)`` pair, or
#: None (``model.weights`` of the config, else the shipped default model).
ModelInput = str | Path | tuple[nn.Module, ModelCard] | None


def process_survey(
    survey_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    preset: str | Path | None = None,
    config_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    weights: ModelInput = None,
    overwrite: bool = False,
    scheduler: str | None = None,
    synchronous: bool = False,
    use_cache: bool = True,
    progress: ProgressCallback | None = None,
    break_lock: bool = False,
) -> RunSummary:
    """Process a survey directory: every image to crack layers, rasters and summaries.

    Resumable and idempotent, by stage (:mod:`cracksurvey.process.images`): each image's
    prediction (COGs and sparse skeleton) and its measured results are cached apart in
    ``out_dir/.cache``. A run interrupted before ``run.json`` is written is resumed by running
    it again; a rerun with ``overwrite`` recomputes only what changed: a new image or model
    reruns the network for it, a changed vectorize or CPP setting only remeasures, a changed
    damage scale only re-summarises.

    Parameters
    ----------
    survey_dir : str or Path
        The survey directory (layout in :mod:`cracksurvey.survey`).
    out_dir : str or Path, optional
        Output folder; default ``survey_dir/cracksurvey``.
    preset, config_path, overrides
        Config layers around survey.yaml: a preset name or YAML, ``--config FILE``, and
        command-line values ``{section: {key: value}}`` (highest precedence).
    weights : path, ``(model, card)`` or None
        Model weights (``.safetensors`` with its ``.json`` card), an in-memory pair, or None
        for ``model.weights`` of the config, else the shipped default model.
    overwrite : bool
        Replace the outputs of a previous run in ``out_dir``.
    scheduler : str, optional
        Address of a Dask scheduler (overrides ``engine.scheduler``); default: a local cluster.
    synchronous : bool
        Run the tiles in this process without Dask (debugging, tests).
    use_cache : bool
        False: recompute every image (``--no-cache``); results are still cached.
    progress : callable, optional
        Called with a :class:`~cracksurvey.progress.ProgressEvent` as images and tiles complete.
    break_lock : bool
        Take over the output folder's lock also when its holder cannot be checked (a run on
        another host, an unreadable lock file): for when the user knows that run has ended.
        A holder on this host that still runs is never broken (:mod:`cracksurvey.io.lock`).

    Returns
    -------
    RunSummary
        ``exit_code`` is 1 if any image failed.

    Raises
    ------
    ConfigError
        Malformed or contradictory survey inputs (before any work).
    OutputExistsError
        ``out_dir`` holds a previous run and ``overwrite`` is False.
    OutputInUseError
        Another run holds ``out_dir`` (its lock file ``cracksurvey.lock``), ``overwrite`` or
        not; the message names it (host, process id, start time) and says what to do.
    ModelError
        No weights, or weights that do not match their card.
    OutputWriteError
        The output folder cannot be written (read-only, no permission, disk full); images
        finished before stay in the cache, so rerunning the same command resumes.
    RunInterrupted
        A :class:`KeyboardInterrupt` (Ctrl-C, or a signal handler that raises one) stopped
        the run: the engine is shut down, the lock released, and the message says how many
        images finished and are kept in the cache; rerunning the same command resumes.

    One run per output folder: the run holds ``out_dir/cracksurvey.lock`` from the start to
    the end, whatever the way it ends (:class:`~cracksurvey.io.lock.RunLock`).

    Failure policy: problems with the survey inputs, an output folder holding a previous run
    and unusable weights raise before any image is processed. An image that cannot be processed
    is recorded with status ``'error'`` and a one-line message; the other images keep their
    results.
    """
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    # A previous run in the output folder is refused first: nothing else is worth checking.
    out = check_output_dir(
        Path(out_dir) if out_dir is not None else Path(survey_dir) / "cracksurvey",
        overwrite=overwrite,
    )
    tally = _Tally(progress)
    with RunLock.acquire(out, break_lock=break_lock), _interrupts_reported(out, tally):
        return _process_locked(
            survey_dir,
            out,
            preset=preset,
            config_path=config_path,
            overrides=overrides,
            weights=weights,
            overwrite=overwrite,
            scheduler=scheduler,
            synchronous=synchronous,
            use_cache=use_cache,
            emit=tally,
            started=started,
            t0=t0,
        )


def _process_locked(
    survey_dir: str | Path,
    out: Path,
    *,
    preset: str | Path | None,
    config_path: str | Path | None,
    overrides: Mapping[str, Any] | None,
    weights: ModelInput,
    overwrite: bool,
    scheduler: str | None,
    synchronous: bool,
    use_cache: bool,
    emit: _Tally,
    started: datetime,
    t0: float,
) -> RunSummary:
    """:func:`process_survey` once the output folder is checked and locked."""
    timings = Timings()
    if isinstance(weights, (str, Path)):  # part of the effective config (run.json)
        overrides = {
            **(overrides or {}),
            "model": {**(overrides or {}).get("model", {}), "weights": str(weights)},
        }
    with timings("discover"):
        survey = discover_survey(
            survey_dir, preset=preset, config_path=config_path, overrides=overrides, progress=emit
        )
    config = survey.config
    damage_scale = load_damage_scale(config.damage.scale, root=survey.root)
    engine_config = config.engine
    if scheduler is not None:
        engine_config = dataclasses.replace(engine_config, scheduler=scheduler)
    with timings("model"):
        model = _read_model(
            weights if isinstance(weights, tuple) else config.model.weights, survey.root
        )
        engine = Engine(
            model,
            core_px=config.tiling.core_px,
            halo_px=config.tiling.halo_px,
            border=config.tiling.border,
            precision=config.model.precision,
            device=config.model.device,
            threshold_px=config.model.threshold_px,
            config=engine_config,
            synchronous=synchronous,
        )
    model_info = _model_info(engine, model, config)
    close_engine = _CloseOnce(engine.close)
    # the local cluster shuts down (its processes exit) while the outputs are written
    closing = threading.Thread(target=close_engine, name="cracksurvey-engine-close")
    summary: RunSummary | None = None
    try:
        try:
            if overwrite:
                clear_previous_outputs(out)
            raster_dir = out / RASTER_DIR
            _check_writable(out, raster_dir)
            run = ImageRun(
                engine=engine,
                predictions=PredictionCache(out, reuse=use_cache),
                results=ImageCache(out, reuse=use_cache),
                config=config,
                model_sha256=model_info["sha256"] or _weights_sha256(model),
                root=survey.root,
                raster_dir=raster_dir,
                timings=timings,
                footprints_for=_footprints_for(survey.buildings),
                buildings_sha256=_file_sha256(survey.buildings_path),
                semantics_model=SemanticsModel(config.semantics.weights),
                detection_limit_px=model_info["detection_limit_px"],
            )
            for cache in (run.predictions, run.results):
                cache.prune(keep=None)  # staging folders of a killed run
            # the semantics and verifier networks here: on the cores the workers leave
            with torch_threads(engine.client_torch_threads):
                outcomes, results = _run_images(run, survey.images, out=out, emit=emit)
        except BaseException:
            close_engine()
            raise
        closing.start()
        try:
            summary = write_outputs(
                survey,
                out,
                outcomes,
                results,
                model_info=model_info,
                timings=timings,
                started=started,
                t0=t0,
                damage_scale=damage_scale,
                cache_info={
                    "dir": CACHE_DIR,
                    "reused": run.reused,
                    "computed": run.computed,
                    "predictions": {
                        "reused": run.predictions_reused,
                        "computed": run.predictions_computed,
                    },
                },
            )
        except OSError as exc:
            failure = output_failure(exc, out, len(run.keys))
            if failure is None:
                raise
            raise failure from exc
        emit.written = True
        closing.join()
    except KeyboardInterrupt:
        if summary is None:
            raise
        # stopped while the engine closed, its outputs written: the run is complete
    finally:
        if closing.is_alive():  # stopped meanwhile: the engine still closes in order
            closing.join()
        close_engine()  # however the run ended (nothing to do once closed)
    assert summary is not None
    try:  # entries of images no longer in the survey, or of stale settings
        run.results.prune(keep=run.keys)
        run.predictions.prune(keep=run.prediction_keys)
    except KeyboardInterrupt:  # the run is complete: the next run prunes
        pass
    return summary


class _CloseOnce:
    """Closes the engine for whichever asks first, the closing thread or the clean-up after
    a stop; the other waits for it (a second close would race the first)."""

    def __init__(self, close: Callable[[], None]) -> None:
        self._close = close
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self) -> None:
        with self._lock:
            if not self._closed:
                self._close()
                self._closed = True


class _Tally:
    """The progress callback of a run, counting what finished for the message of a stop."""

    def __init__(self, progress: ProgressCallback | None) -> None:
        self.progress = progress
        self.total: int | None = None
        self.finished = 0
        self.written = False

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "images":
            self.total = event.total
        elif event.kind == "image_done" and event.outcome is not None:
            self.finished += event.outcome.status == "ok"
        if self.progress is not None:
            self.progress(event)


@contextmanager
def _interrupts_reported(out: Path, tally: _Tally) -> Iterator[None]:
    """A KeyboardInterrupt becomes :class:`RunInterrupted`, saying what was kept.

    Every image is committed to the cache when it finishes (atomically), so what finished
    before the stop is there; what was being computed is dropped (staging folders, removed by
    the next run).
    """
    try:
        yield
    except RunInterrupted:
        raise
    except KeyboardInterrupt as exc:
        if tally.total is None:
            message = "stopped before any image was processed; run the same command again"
        elif tally.written:
            message = f"stopped after the run had finished; its outputs are in {out}"
        elif tally.finished == 0:
            message = (
                f"none of the {tally.total} images had finished; run the same command again "
                "to start over"
            )
        else:
            message = (
                f"{tally.finished} of {tally.total} images finished and are kept in "
                f"{out / CACHE_DIR}; run the same command again to resume (they are not "
                "computed again)"
            )
        raise RunInterrupted(message, finished=tally.finished, total=tally.total) from exc


def _run_images(
    run: ImageRun,
    records: tuple[ImageRecord, ...],
    *,
    out: Path,
    emit: ProgressCallback,
) -> tuple[list[ImageOutcome], list[tuple[ImageRecord, ImageLayers]]]:
    """Every image through its stages, in order; one failing image does not stop the others."""
    root = run.root
    # the next image whose prediction is computed, after each one: each image's engine run
    # starts that image's first tiles while it is finished and measured
    next_computed: list[Path | None] = []
    following: Path | None = None
    for record in reversed(records):
        next_computed.append(following)
        if run.needs_prediction(record):
            following = record.path
    next_computed.reverse()
    outcomes: list[ImageOutcome] = []
    results: list[tuple[ImageRecord, ImageLayers]] = []
    total = len(records)
    emit(ProgressEvent("images", 0, total))
    for index, record in enumerate(records):
        emit(ProgressEvent("image", index, total, image=record.name))
        if record.status == "error" or record.georef is None:
            outcome = unprocessable(record, root=root)
        else:
            try:
                outcome, layers = run.image(record, progress=emit, next_image=next_computed[index])
                results.append((record, layers))
            except Exception as exc:  # one image must not cost the others their results
                failure = output_failure(exc, out, len(run.keys))
                if failure is not None:  # every next image would fail the same way
                    raise failure from exc
                outcome = failed(record, exc, root=root, raster_dir=run.raster_dir)
        outcomes.append(outcome)
        emit(
            ProgressEvent(
                "image_done",
                index + 1,
                total,
                image=record.name,
                outcome=outcome,
                cached=record.name in run.reused,
            )
        )
    return outcomes, results


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def _weights_path(weights: str | Path | None, survey_root: Path) -> Path | None:
    """Relative weights: from the working directory, else from the survey directory."""
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if not path.is_absolute() and not path.exists() and (survey_root / path).exists():
        return survey_root / path
    return path


def _read_model(
    weights: str | Path | tuple[nn.Module, ModelCard] | None, survey_root: Path
) -> Weights | tuple[nn.Module, ModelCard]:
    """The weights, read once (or the in-memory pair as given)."""
    if isinstance(weights, tuple):
        return weights
    return read_weights(_weights_path(weights, survey_root))


def _model_info(
    engine: Engine, model: Weights | tuple[nn.Module, ModelCard], config: ProcessConfig
) -> dict[str, Any]:
    """The model as run.json records it."""
    card = engine.card
    return {
        "model_id": card.model_id,
        "sha256": card.sha256,
        "architecture": card.architecture,
        "width": card.width,
        "body_head": card.body_head,
        "clip_px": card.clip_px,
        "threshold_px": engine.threshold_px,
        # narrowest crack the model finds, pixels (measured, the card's notes); None: unknown
        "detection_limit_px": card.notes.get("detection_limit_px"),
        "threshold_source": "config" if config.model.threshold_px is not None else "model card",
        "weights": model.source if isinstance(model, Weights) else "in-memory model",
        # the client's device; workers resolve "auto" for themselves
        "device": resolve_device(config.model.device),
    }


def _weights_sha256(model: Weights | tuple[nn.Module, ModelCard]) -> str:
    """A checksum of weights whose card has none (in-memory models): a hash of the tensors."""
    if isinstance(model, Weights):
        return hashlib.sha256(model.data).hexdigest()
    digest = hashlib.sha256()
    for name, tensor in sorted(model[0].state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Survey inputs and the output folder
# --------------------------------------------------------------------------------------------
def _footprints_for(
    buildings: gpd.GeoDataFrame | None,
) -> Callable[[Georef], gpd.GeoDataFrame | None]:
    """``footprints_for(georef)``: the buildings layer in a map image's CRS (memoised per CRS);
    None for façade and pixel images (joined by images.csv, not by footprint)."""
    cache: dict[str, gpd.GeoDataFrame | None] = {}

    def footprints_for(georef: Georef) -> gpd.GeoDataFrame | None:
        if georef.kind != "map":
            return None
        key = georef.crs.to_wkt() if georef.crs is not None else ""
        if key not in cache:
            cache[key] = footprints_in(buildings, georef.crs)
        return cache[key]

    return footprints_for


def _file_sha256(path: Path | None) -> str | None:
    return hash_file(path) if path is not None and path.is_file() else None


def _check_writable(out: Path, raster_dir: Path) -> None:
    """Create the output folders and write a probe file, or raise one clear error."""
    try:
        for folder in (raster_dir, out / CACHE_DIR):
            folder.mkdir(parents=True, exist_ok=True)
        probe = out / CACHE_DIR / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputWriteError(
            f"{out}: the output folder cannot be written ({exc.strerror or exc}); fix its "
            "permissions or free space, or choose another --out"
        ) from exc


#: errno values that mean "the output cannot be written", whichever file was being written.
_FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def output_failure(exc: BaseException, out: Path, n_finished: int) -> OutputWriteError | None:
    """One clear error for a full disk or an unwritable output folder; None for other errors.

    Input problems are :class:`CrackSurveyError` (e.g. InputRasterError) and stay per-image;
    GDAL reports write errors without an errno, so its message is matched too.
    """
    if isinstance(exc, CrackSurveyError) or not isinstance(exc, OSError):
        return None
    text = str(exc)
    full = exc.errno in _FULL_OR_READ_ONLY or any(
        os.strerror(code) in text for code in _FULL_OR_READ_ONLY
    )
    denied = (
        exc.errno in (errno.EACCES, errno.EPERM)
        and exc.filename is not None
        and (Path(str(exc.filename)).resolve().is_relative_to(out.resolve()))
    )
    if not (full or denied):
        return None
    reason = exc.strerror or one_line(text)
    return OutputWriteError(
        f"{out}: cannot write outputs ({reason}); the {n_finished} images finished so far are "
        f"kept in {out / CACHE_DIR}: free space or fix permissions, then rerun the same command "
        "to resume"
    )
