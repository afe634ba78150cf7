"""The process tool: a survey directory in, crack layers, rasters and summaries out.

:func:`process_survey` composes the stages (DESIGN.md)::

    discover_survey ─► Engine.run_image (tiles ─► model ─► COGs + sparse skeleton)
      ─► vectorize_skeleton ─► building join ─► CPP from the mask COG ─► summarize_buildings
      ─► cracks.gpkg, summary.csv/json, report.html, run.json

Outputs in ``out_dir`` (default ``survey_dir/cracksurvey/``)::

    cracks.gpkg                      layers described in cracksurvey.io.vector
    rasters/<image>_distance.tif     distance map (COG), float32, pixels
    rasters/<image>_mask.tif         crack mask (COG), 1 crack, 0 background, 255 nodata
    summary.csv, summary.json        one row per building (= the buildings layer attributes)
    report.html                      self-contained damage report (cracksurvey.report)
    run.json                         version, model, effective config, inputs + hashes,
                                     timings, per-image status; written last

Building join:

- an image with a ``building_id`` in images.csv belongs to that building, with all its cracks
  and its whole imaged area (images.csv overrides what the rasters say);
- other map-georeferenced images are joined to the buildings layer by footprint: a crack goes
  to the footprint it overlaps most (footprints are reprojected to the image CRS when the CRSs
  differ), a CPP patch to the footprint holding its centre, and the imaged area of a building
  is its footprint clipped to the image extent (nodata areas inside are not subtracted);
- cracks matching no building have ``building_id`` None; their number is logged, returned and
  written to run.json.

Failure policy: problems with the survey inputs (:class:`~cracksurvey.errors.ConfigError`), an
output folder holding a previous run (:class:`~cracksurvey.errors.OutputExistsError`) and
unusable weights (:class:`~cracksurvey.errors.ModelError`) raise before any image is processed.
An image that cannot be processed is recorded with status ``'error'`` and a one-line message;
the other images keep their results.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import os
import platform
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from cracksurvey import __version__
from cracksurvey.config import ProcessConfig
from cracksurvey.errors import CrackSurveyError, CrackSurveyWarning, ModelError, OutputWriteError
from cracksurvey.io.survey_files import discover_survey
from cracksurvey.survey import ImageRecord, ImageStatus, Survey

if TYPE_CHECKING:
    import geopandas as gpd
    from pyproj import CRS
    from torch import nn

    from cracksurvey.damage import DamageScale
    from cracksurvey.engine import Engine
    from cracksurvey.georef import Georef
    from cracksurvey.io.cache import CachedImage, ImageCache
    from cracksurvey.model import ModelCard

__all__ = [
    "ImageOutcome",
    "ProgressCallback",
    "ProgressEvent",
    "RunSummary",
    "process_survey",
]

logger = logging.getLogger(__name__)

ProgressKind = Literal["images", "image", "tile", "image_done"]


#: Version of the per-image cache entries' content (part of every cache key).
CACHE_ENTRY_FORMAT = 2

@dataclass(frozen=True)
class ProgressEvent:
    """What :func:`process_survey` reports to its ``progress`` callback.

    Attributes
    ----------
    kind : {'images', 'image', 'tile', 'image_done'}
        ``images``: the run starts, ``total`` images. ``image``: image number ``done + 1`` of
        ``total`` starts. ``tile``: ``done`` of ``total`` tiles of ``image`` are written.
        ``image_done``: ``outcome`` of image number ``done`` of ``total``.
    cached : bool
        ``image_done`` only: the outcome comes from the cache of a previous run.
    """

    kind: ProgressKind
    done: int
    total: int
    image: str | None = None
    outcome: ImageOutcome | None = None
    cached: bool = False


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class ImageOutcome:
    """The result of one image (a row of the ``images`` layer and of run.json).

    ``image`` is the file name (the key of images.csv and of the outputs), ``path`` the file
    relative to the survey directory, ``message`` one line for ``status == 'error'``.
    """

    image: str
    status: ImageStatus
    message: str | None = None
    path: str = ""
    building_id: str | None = None
    facade_id: str | None = None
    georef_kind: str | None = None
    georef_source: str | None = None
    crs_name: str | None = None
    width_px: int | None = None
    height_px: int | None = None
    gsd_mm: float | None = None
    n_tiles: int = 0
    precision: str | None = None
    seconds: float = 0.0
    n_cracks: int = 0
    total_length_m: float = math.nan
    valid_px: int = 0
    area_m2: float = math.nan
    cpp_mean: float = math.nan
    cpp_patches: int = 0
    distance_raster: str | None = None
    mask_raster: str | None = None
    sha256: str = ""
    warnings: tuple[str, ...] = ()

    def line(self) -> str:
        """One line for a terminal: ``ok images/a.tif: 3 cracks, 1.25 m, 4 tiles, 2.1 s``."""
        if self.status == "error":
            return f"error {self.message}"
        length = (
            f"{self.total_length_m:.2f} m" if math.isfinite(self.total_length_m) else "pixel units"
        )
        crack_word = "crack" if self.n_cracks == 1 else "cracks"
        return (
            f"ok    {self.path or self.image}: {self.n_cracks} {crack_word}, {length}, "
            f"{self.n_tiles} tiles, {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class RunSummary:
    """What :func:`process_survey` did.

    Attributes
    ----------
    out_dir : Path
    images : tuple of ImageOutcome
        Every image of the survey, sorted by name.
    buildings : pandas.DataFrame
        The building summary (= ``summary.csv``).
    layers : dict
        ``{layer name: {"crs": name or None, "geometry_type": str, "features": int}}``.
    n_cracks, n_cracks_unassigned : int
        Cracks written, and those without a building.
    record : dict
        The content of run.json.
    """

    out_dir: Path
    images: tuple[ImageOutcome, ...]
    buildings: pd.DataFrame
    layers: dict[str, dict[str, Any]]
    n_cracks: int
    n_cracks_unassigned: int
    record: dict[str, Any] = field(repr=False)

    @property
    def failed(self) -> tuple[ImageOutcome, ...]:
        return tuple(i for i in self.images if i.status == "error")

    @property
    def exit_code(self) -> int:
        """0 when every image succeeded, 1 when some image failed."""
        return 1 if self.failed else 0

    @property
    def gpkg_path(self) -> Path:
        return self.out_dir / "cracks.gpkg"

    @property
    def run_json_path(self) -> Path:
        return self.out_dir / "run.json"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Timings:
    """Seconds per stage, summed over images."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def _weights_path(weights: str | Path | None, survey_root: Path) -> Path | None:
    """Relative weights: from the working directory, else from the survey directory."""
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if not path.is_absolute() and not path.exists() and (survey_root / path).exists():
        return survey_root / path
    return path


ModelInput = str | Path | tuple["nn.Module", "ModelCard"] | None


def _load_model(
    weights: ModelInput, config: ProcessConfig, survey_root: Path, *, in_process: bool, device: str
) -> tuple[Any, ModelCard, dict[str, Any]]:
    """Load and check the weights once; return the engine's model source, card, provenance."""
    from cracksurvey.model import default_weights_path, load_model

    threshold = config.model.threshold
    if isinstance(weights, tuple):
        model, card = weights
        path_text = "in-memory model"
    else:
        path = _weights_path(weights, survey_root)
        if path is None and not default_weights_path().exists():
            raise ModelError(
                f"no default model is shipped yet ({default_weights_path()} is missing); "
                "pass --weights PATH to a .safetensors file with its .json model card "
                "(cracksurvey train writes one)"
            )
        model, card = load_model(path, device=device)
        path_text = str((path or default_weights_path()).with_suffix(".safetensors"))
    if threshold is not None:
        card = dataclasses.replace(card, threshold_px=float(threshold))
    # The engine loads weights from disk once per worker; an override of the card's threshold
    # (or an in-memory model) travels as an in-memory (model, card) pair instead.
    if in_process or threshold is not None or isinstance(weights, tuple):
        source: Any = (model, card)
    else:
        source = path_text
        del model
    info = {
        "model_id": card.model_id,
        "sha256": card.sha256,
        "architecture": card.architecture,
        "width": card.width,
        "body_head": card.body_head,
        "clip_px": card.clip_px,
        "threshold_px": card.threshold_px,
        "threshold_source": "config" if threshold is not None else "model card",
        "weights": path_text,
        "device": device,
    }
    return source, card, info


def _engine_config(config: ProcessConfig, device: str) -> Any:
    from cracksurvey.engine import EngineConfig

    tiling = config.tiling
    if tiling.batch_size != 1:
        logger.info("tiling.batch_size=%d: the engine runs one tile per call", tiling.batch_size)
    precision = config.model.precision  # "auto" is resolved by each worker for its own device
    return EngineConfig(
        tile_px=tiling.tile_px - 2 * tiling.halo_px,  # config: tile side, halo included
        halo_px=tiling.halo_px,
        precision=precision,
        n_workers=config.engine.workers,
        threads_per_worker=config.engine.threads_per_worker,
        device=device,
    )


def _image_polygon(georef: Georef, width: int, height: int) -> Any:
    import shapely

    corners = [(0, 0), (width, 0), (width, height), (0, height)]
    return shapely.Polygon([georef.transform @ c for c in corners])


def _crs_label(crs: CRS | None) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg(min_confidence=90)
    return f"EPSG:{epsg}" if epsg else crs.name


def cracks_to_3d(geometries: gpd.GeoSeries, plane: Any) -> np.ndarray:
    """Façade-frame crack geometries to 3-D (X, Y, Z) in the plane's CRS."""
    import shapely

    from cracksurvey.georef import facade_to_world

    def to_world(coords: np.ndarray) -> np.ndarray:
        x, y, z = facade_to_world(coords[:, 0], coords[:, 1], plane)
        return np.column_stack([x, y, z])

    flat = shapely.force_3d(np.asarray(geometries.values), 0.0)
    return shapely.transform(flat, to_world, include_z=True)


# --------------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------------
@dataclass
class _ImageLayers:
    cracks: gpd.GeoDataFrame
    branches: gpd.GeoDataFrame
    cracks_3d: gpd.GeoDataFrame | None
    coverage: list[dict[str, Any]]


def _patch_counts(
    mask_path: Path, config: ProcessConfig
) -> tuple[np.ndarray, np.ndarray, int]:
    """CPP fragment count and origin of each counted patch, and the number of valid pixels.

    The mask COG is read one row of patches at a time (memory: ``patch_px`` x width bytes).
    """
    from cracksurvey.io.outputs import read_mask_strips
    from cracksurvey.measure.continuity import cracks_per_patch, patch_origins
    from cracksurvey.tiling import MASK_NODATA

    patch = config.cpp.patch_px
    counts, origins, n_valid = [], [], 0
    for row0, strip in read_mask_strips(mask_path, strip_rows=patch):
        valid = strip != MASK_NODATA
        n_valid += int(valid.sum())
        crack = strip == 1
        counts.append(
            cracks_per_patch(crack, patch_px=patch, min_area_px=config.cpp.min_area_px, valid=valid)
        )
        origins.append(patch_origins(strip.shape, patch_px=patch, valid=valid) + [row0, 0])
    return (
        np.concatenate(counts) if counts else np.zeros(0, np.int64),
        np.concatenate(origins) if origins else np.zeros((0, 2), np.int64),
        n_valid,
    )


def _process_image(
    engine: Engine,
    record: ImageRecord,
    *,
    config: ProcessConfig,
    card: ModelCard,
    raster_dir: Path,
    write_dir: Path,
    root: Path,
    footprints: gpd.GeoDataFrame | None,
    timings: _Timings,
    on_tile_done: Callable[[int, int], None] | None,
    next_image: Path | None = None,
) -> tuple[ImageOutcome, _ImageLayers]:
    """Run one image; its COGs go to ``write_dir`` (the outcome names them in ``raster_dir``).

    ``next_image``: the image computed after this one; the engine starts its first tiles while
    this one is finished and vectorized here.
    """
    import geopandas as gpd
    from rasterio.errors import NotGeoreferencedWarning

    from cracksurvey.io.cache import RASTER_NAMES
    from cracksurvey.vectorize import vectorize_skeleton

    georef = record.georef
    assert georef is not None and record.width is not None and record.height is not None
    distance_path, mask_path = (write_dir / name for name in RASTER_NAMES)
    with timings("engine"), warnings.catch_warnings():
        # The georeferencing was resolved at discovery (world files, images.csv, pixel units);
        # rasterio's warning about rasters without a geotransform is noise here.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        result = engine.run_image(
            record.path, distance_path=distance_path, mask_path=mask_path,
            on_tile_done=on_tile_done, next_image=next_image,
            # the COGs overlay the crack layers: same transform and CRS, as resolved
            georeference=(georef.transform, georef.crs.to_wkt() if georef.crs else None),
        )
    skeleton = result.skeleton
    vcfg = config.vectorize
    with timings("vectorize"):
        cracks, branches = vectorize_skeleton(
            skeleton.rows,
            skeleton.cols,
            transform=georef.transform,
            width_px=skeleton.width_px,
            distance_px=skeleton.distance_px,
            threshold_px=card.threshold_px,
            pixel_size_m=georef.pixel_size_m,
            min_spur_px=vcfg.min_spur_px,
            min_crack_length_px=vcfg.min_crack_length_px,
            smoothing_px=vcfg.smoothing_px,
        )
    # length_m is in CRS units: metres for façade frames, scaled for e.g. US-foot map CRSs,
    # unknown (NaN) in pixel units.
    for frame in (cracks, branches):
        if georef.kind == "pixel":
            frame["length_m"] = np.nan
        elif georef.metres_per_unit not in (None, 1.0):
            frame["length_m"] = frame["length_m"] * georef.metres_per_unit

    with timings("cpp"):
        counts, origins, n_valid = _patch_counts(mask_path, config)

    with timings("join"):
        building, coverage = _join_buildings(
            record, cracks, counts=counts, origins=origins, n_valid=n_valid,
            footprints=footprints, patch_px=config.cpp.patch_px,
        )
        crack_building = dict(zip(cracks["crack_id"].to_numpy(), building))
        branch_building = [crack_building.get(c) for c in branches["crack_id"].to_numpy()]
        for frame, ids in ((cracks, list(building)), (branches, branch_building)):
            n = len(frame)
            frame.insert(0, "image", pd.Series([record.name] * n, dtype=object))
            frame.insert(1, "building_id", pd.Series(ids, dtype=object))
            frame.insert(2, "facade_id", pd.Series([record.facade_id] * n, dtype=object))

    cracks_3d = None
    if georef.kind == "facade_world" and georef.plane is not None:
        cracks_3d = gpd.GeoDataFrame(
            cracks.drop(columns="geometry"),
            geometry=gpd.GeoSeries(cracks_to_3d(cracks.geometry, georef.plane)),
        )

    total = float(cracks["length_m"].sum()) if georef.kind != "pixel" else math.nan
    outcome = ImageOutcome(
        **_record_fields(record, raster_dir, root=root),
        status="ok",
        n_tiles=result.n_tiles,
        precision=result.precision,
        seconds=result.seconds,
        n_cracks=len(cracks),
        total_length_m=total,
        valid_px=n_valid,
        area_m2=n_valid * georef.pixel_size_m**2 if georef.pixel_size_m else math.nan,
        cpp_mean=float(counts.mean()) if counts.size else math.nan,
        cpp_patches=int(counts.size),
    )
    return outcome, _ImageLayers(cracks, branches, cracks_3d, coverage)


def _join_buildings(
    record: ImageRecord,
    cracks: gpd.GeoDataFrame,
    *,
    counts: np.ndarray,
    origins: np.ndarray,
    n_valid: int,
    footprints: gpd.GeoDataFrame | None,
    patch_px: int,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Building of each crack, and what the image contributes to each building (coverage)."""
    from cracksurvey.summary import join_cracks_to_footprints, join_points_to_footprints

    georef = record.georef
    assert georef is not None
    if record.building_id is not None or georef.kind != "map" or footprints is None:
        area_per_px = georef.pixel_size_m**2 if georef.pixel_size_m else math.nan
        coverage = dict(image=record.name, building_id=record.building_id,
                        area_m2=n_valid * area_per_px, cpp_fragments=int(counts.sum()),
                        cpp_patches=int(counts.size))
        return np.full(len(cracks), record.building_id, dtype=object), [coverage]
    building = join_cracks_to_footprints(cracks.geometry, footprints)
    # patch centres (clipped to the image for partial border patches) to map coordinates
    rows = origins[:, 0] + np.minimum(patch_px, (record.height or 0) - origins[:, 0]) / 2.0
    cols = origins[:, 1] + np.minimum(patch_px, (record.width or 0) - origins[:, 1]) / 2.0
    x, y = georef.transform @ (cols, rows)
    patch_building = join_points_to_footprints(np.column_stack([x, y]), footprints)
    polygon = _image_polygon(georef, record.width or 0, record.height or 0)
    square_m = (georef.metres_per_unit or 1.0) ** 2
    coverage_rows = []
    overlapping = footprints[footprints.intersects(polygon)]
    for building_id, footprint in zip(overlapping["building_id"], overlapping.geometry):
        in_building = patch_building == building_id
        coverage_rows.append(
            dict(image=record.name, building_id=building_id,
                 area_m2=float(footprint.intersection(polygon).area * square_m),
                 cpp_fragments=int(counts[in_building].sum()),
                 cpp_patches=int(in_building.sum()))
        )
    return building, coverage_rows


def _failed(record: ImageRecord, exc: Exception, *, root: Path, raster_dir: Path) -> ImageOutcome:
    """The outcome of an image whose processing raised; its partial rasters are deleted."""
    shown = _display_path(record, root)
    message = _one_line(str(exc).replace(str(record.path), shown))
    if not isinstance(exc, (CrackSurveyError, OSError)):  # a bug: say so, keep the traceback
        logger.error("%s: unexpected error", shown, exc_info=True)
        message = f"{shown}: {type(exc).__name__}: {message} (please report this)"
    elif shown not in message:
        message = f"{shown}: {message}"
    logger.error("%s", message)
    for kind in ("distance", "mask"):
        (raster_dir / f"{record.stem}_{kind}.tif").unlink(missing_ok=True)
    return ImageOutcome(**_record_fields(record, None, root=root), status="error",
                        message=message)


def _display_path(record: ImageRecord, root: Path) -> str:
    try:
        return record.path.relative_to(root).as_posix()
    except ValueError:
        return str(record.path)


def _record_fields(
    record: ImageRecord, raster_dir: Path | None, *, root: Path
) -> dict[str, Any]:
    georef = record.georef
    rasters = {}
    if raster_dir is not None:
        rasters = dict(
            distance_raster=f"{raster_dir.name}/{record.stem}_distance.tif",
            mask_raster=f"{raster_dir.name}/{record.stem}_mask.tif",
        )
    return dict(
        image=record.name,
        path=_display_path(record, root),
        building_id=record.building_id,
        facade_id=record.facade_id,
        georef_kind=georef.kind if georef else None,
        georef_source=georef.source if georef else None,
        crs_name=_crs_label(georef.crs) if georef else None,
        width_px=record.width,
        height_px=record.height,
        gsd_mm=georef.pixel_size_m * 1000 if georef and georef.pixel_size_m else None,
        sha256=record.sha256,
        warnings=record.warnings,
        **rasters,
    )


# --------------------------------------------------------------------------------------------
# Cache (resume, idempotence) and output failures
# --------------------------------------------------------------------------------------------
@dataclass
class _ImageRun:
    """What the images of one run share; runs an image through the cache (see process_survey)."""

    engine: Engine
    cache: ImageCache
    config: ProcessConfig
    card: ModelCard
    root: Path
    out: Path
    raster_dir: Path
    timings: _Timings
    footprints_for: Callable[[Georef], gpd.GeoDataFrame | None]
    model_sha256: str
    buildings_sha256: str | None
    reused: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)

    def needs_compute(self, record: ImageRecord) -> bool:
        """Whether :meth:`image` will likely compute the record (no committed cache entry)."""
        if record.status == "error" or record.georef is None:
            return False
        return not self.cache.has(self._key(record))

    def image(
        self,
        record: ImageRecord,
        *,
        on_tile_done: Callable[[int, int], None] | None,
        next_image: Path | None = None,
    ) -> tuple[ImageOutcome, _ImageLayers]:
        """The image's outcome and layers: from its cache entry, else computed into one.

        ``next_image``: the next image to compute, started early by the engine (see
        :func:`_process_image`).
        """
        from cracksurvey.io.cache import publish_raster

        key = self._key(record)
        entry = self.cache.lookup(key)
        if entry is None:
            entry = self._compute(record, key, on_tile_done, next_image)
            self.computed.append(record.name)
        else:
            self.reused.append(record.name)
        self.keys.add(key)
        with self.timings("cache"):
            for source, kind in ((entry.distance_path, "distance"), (entry.mask_path, "mask")):
                publish_raster(source, self.raster_dir / f"{record.stem}_{kind}.tif")
        outcome = ImageOutcome(**{**entry.record["outcome"],
                                  "warnings": tuple(entry.record["outcome"]["warnings"])})
        frames = entry.frames
        layers = _ImageLayers(frames["cracks"], frames["branches"], frames["cracks_3d"],
                              entry.record["coverage"])
        return outcome, layers

    def _compute(
        self,
        record: ImageRecord,
        key: str,
        on_tile_done: Callable[[int, int], None] | None,
        next_image: Path | None = None,
    ) -> CachedImage:
        """Process the image into a staging folder and commit it as the entry of ``key``."""
        assert record.georef is not None
        staging = self.cache.stage()
        try:
            outcome, layers = _process_image(
                self.engine, record, config=self.config, card=self.card,
                raster_dir=self.raster_dir, write_dir=staging, root=self.root,
                footprints=self.footprints_for(record.georef), timings=self.timings,
                on_tile_done=on_tile_done, next_image=next_image,
            )
            with self.timings("cache"):
                return self.cache.commit(
                    staging, key,
                    {"outcome": dataclasses.asdict(outcome), "coverage": layers.coverage},
                    {"cracks": layers.cracks, "branches": layers.branches,
                     "cracks_3d": layers.cracks_3d},
                )
        finally:
            self.cache.discard(staging)  # gone already when committed

    def _key(self, record: ImageRecord) -> str:
        """Cache key: everything the image's rasters, layers and outcome depend on."""
        from cracksurvey.io.cache import cache_key

        georef = record.georef
        assert georef is not None
        plane = georef.plane
        sections = self.config.to_dict()
        joined_by_footprint = record.building_id is None and georef.kind == "map"
        return cache_key({
            "cracksurvey": __version__,
            # Bump when what a cache entry holds changes within one version (2: COGs carry the
            # resolved georeferencing, not only the input file's own tags).
            "entry_format": CACHE_ENTRY_FORMAT,
            "image": {
                "name": record.name, "path": _display_path(record, self.root),
                "sha256": record.sha256, "building_id": record.building_id,
                "facade_id": record.facade_id, "size": [record.width, record.height],
                "warnings": list(record.warnings),
            },
            "georef": {
                "kind": georef.kind, "source": georef.source,
                "transform": list(georef.transform)[:6],
                "crs": georef.crs.to_wkt() if georef.crs is not None else None,
                "pixel_size_m": georef.pixel_size_m, "metres_per_unit": georef.metres_per_unit,
                "plane": None if plane is None else {
                    "start_xy": list(plane.start_xy), "end_xy": list(plane.end_xy),
                    "base_z": plane.base_z, "crs": plane.crs.to_wkt(),
                },
            },
            "model": {
                "sha256": self.model_sha256, "threshold_px": self.card.threshold_px,
                "precision": sections["model"]["precision"], "device": sections["model"]["device"],
            },
            "config": {name: sections[name] for name in ("tiling", "vectorize", "cpp")},
            "buildings": self.buildings_sha256 if joined_by_footprint else None,
        })


def _weights_sha256(card: ModelCard, source: Any) -> str:
    """The card's checksum; for an in-memory model without one, a hash of its weights."""
    if card.sha256 or not isinstance(source, tuple):
        return card.sha256
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(source[0].state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _file_sha256(path: Path | None) -> str | None:
    from cracksurvey.io.survey_files import hash_file

    return hash_file(path) if path is not None and path.is_file() else None


def _check_writable(out: Path, raster_dir: Path) -> None:
    """Create the output folders and write a probe file, or raise one clear error."""
    import uuid

    from cracksurvey.io.cache import CACHE_DIR

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


def _output_failure(exc: BaseException, out: Path, n_finished: int) -> OutputWriteError | None:
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
    denied = exc.errno in (errno.EACCES, errno.EPERM) and exc.filename is not None and (
        Path(str(exc.filename)).resolve().is_relative_to(out.resolve())
    )
    if not (full or denied):
        return None
    reason = exc.strerror or _one_line(text)
    return OutputWriteError(
        f"{out}: cannot write outputs ({reason}); the {n_finished} images finished so far are "
        f"kept in {out / '.cache'}: free space or fix permissions, then rerun the same command "
        "to resume"
    )


# --------------------------------------------------------------------------------------------
# The tool
# --------------------------------------------------------------------------------------------
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
) -> RunSummary:
    """Process a survey directory: every image to crack layers, rasters and summaries.

    Resumable and idempotent: each image's results are cached in ``out_dir/.cache`` (keyed by
    its content, the model checksum and threshold, the per-image config and georeferencing;
    :mod:`cracksurvey.io.cache`). A run interrupted before ``run.json`` is written is resumed
    by running it again; a rerun with ``overwrite`` recomputes only images whose key changed.

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
        Called with a :class:`ProgressEvent` as images and tiles complete.

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
    ModelError
        No weights, or weights that do not match their card.
    OutputWriteError
        The output folder cannot be written (read-only, no permission, disk full); images
        finished before stay in the cache, so rerunning the same command resumes.
    """
    from cracksurvey.damage import load_damage_scale
    from cracksurvey.engine import Engine, resolve_device
    from cracksurvey.io.cache import CACHE_DIR, ImageCache
    from cracksurvey.io.outputs import RASTER_DIR, check_output_dir, clear_previous_outputs

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    timings = _Timings()
    emit = progress or (lambda event: None)

    # A previous run in the output folder is refused first: nothing else is worth checking.
    out = check_output_dir(
        Path(out_dir) if out_dir is not None else Path(survey_dir) / "cracksurvey",
        overwrite=overwrite,
    )
    if isinstance(weights, (str, Path)):  # part of the effective config (run.json)
        overrides = {**(overrides or {}),
                     "model": {**(overrides or {}).get("model", {}), "weights": str(weights)}}
    with timings("discover"):
        survey = discover_survey(
            survey_dir, preset=preset, config_path=config_path, overrides=overrides
        )
    config = survey.config
    damage_scale = load_damage_scale(config.damage.scale, root=survey.root)
    if config.vectorize.bridge_gap_px:
        warnings.warn(
            f"vectorize.bridge_gap_px={config.vectorize.bridge_gap_px}: gap bridging is not "
            "implemented yet; no gap is bridged",
            CrackSurveyWarning,
            stacklevel=2,
        )
    scheduler = scheduler or config.engine.scheduler
    # the client's device: to check the weights here; workers resolve "auto" for themselves
    device = resolve_device(config.model.device)
    with timings("model"):
        model_source, card, model_info = _load_model(
            weights if isinstance(weights, tuple) else config.model.weights,
            config,
            survey.root,
            in_process=synchronous,
            device=device,
        )
    if overwrite:
        clear_previous_outputs(out)
    raster_dir = out / RASTER_DIR
    _check_writable(out, raster_dir)
    cache = ImageCache(out, reuse=use_cache)
    cache.prune(keep=None)  # staging folders of a killed run

    from cracksurvey.summary import footprints_in

    footprint_cache: dict[str, gpd.GeoDataFrame | None] = {}

    def footprints_for(georef: Georef) -> gpd.GeoDataFrame | None:
        if georef.kind != "map":
            return None
        key = georef.crs.to_wkt() if georef.crs is not None else ""
        if key not in footprint_cache:
            footprint_cache[key] = footprints_in(survey.buildings, georef.crs)
        return footprint_cache[key]

    outcomes: list[ImageOutcome] = []
    results: list[tuple[ImageRecord, _ImageLayers]] = []
    total = len(survey.images)
    emit(ProgressEvent("images", 0, total))
    engine_cfg = _engine_config(config, config.model.device)
    engine = Engine(model_source, config=engine_cfg, scheduler=scheduler,
                    synchronous=synchronous)
    try:
        run = _ImageRun(
            engine=engine, cache=cache, config=config, card=card, root=survey.root, out=out,
            raster_dir=raster_dir, timings=timings, footprints_for=footprints_for,
            model_sha256=_weights_sha256(card, model_source),
            buildings_sha256=_file_sha256(survey.buildings_path),
        )
        # the next image to compute (not cached) after each one: each image's engine run
        # starts that image's first tiles while it is finished and vectorized
        next_computed: list[Path | None] = []
        following: Path | None = None
        for record in reversed(survey.images):
            next_computed.append(following)
            if run.needs_compute(record):
                following = record.path
        next_computed.reverse()
        for index, record in enumerate(survey.images):
            emit(ProgressEvent("image", index, total, image=record.name))
            if record.status == "error" or record.georef is None:
                outcome = ImageOutcome(
                    **_record_fields(record, None, root=survey.root), status="error",
                    message=_one_line(record.message or f"{record.name}: cannot be processed"),
                )
            else:
                def on_tile(done: int, n: int, name: str = record.name) -> None:
                    emit(ProgressEvent("tile", done, n, image=name))

                try:
                    outcome, layers = run.image(
                        record, on_tile_done=on_tile, next_image=next_computed[index]
                    )
                    results.append((record, layers))
                except Exception as exc:  # one image must not cost the others their results
                    failure = _output_failure(exc, out, len(run.keys))
                    if failure is not None:  # every next image would fail the same way
                        raise failure from exc
                    outcome = _failed(record, exc, root=survey.root, raster_dir=raster_dir)
            outcomes.append(outcome)
            emit(ProgressEvent("image_done", index + 1, total, image=record.name,
                               outcome=outcome, cached=record.name in run.reused))
    except BaseException:
        engine.close()
        raise
    # the local cluster shuts down (its processes exit) while the outputs are written
    closing = threading.Thread(target=engine.close, name="cracksurvey-engine-close")
    closing.start()
    try:
        summary = _write_outputs(
            survey, out, outcomes, results, model_info=model_info, timings=timings,
            started=started, t0=t0, damage_scale=damage_scale,
            cache_info={"dir": CACHE_DIR, "reused": run.reused, "computed": run.computed},
        )
    except OSError as exc:
        failure = _output_failure(exc, out, len(run.keys))
        if failure is None:
            raise
        raise failure from exc
    finally:
        closing.join()
    cache.prune(keep=run.keys)  # entries of images no longer in the survey, or stale configs
    return summary


# --------------------------------------------------------------------------------------------
# Layers, summaries, run.json
# --------------------------------------------------------------------------------------------
#: Columns the process puts in front of the vectorize columns of cracks and branches.
_ID_COLUMNS = {"image": "str", "building_id": "str", "facade_id": "str"}

#: Columns (and dtypes) of the images layer: the fields of :class:`ImageOutcome`.
IMAGE_COLUMNS: dict[str, str] = {
    f.name: {"int": "Int64", "float": "float64", "float | None": "float64",
             "int | None": "Int64"}.get(str(f.type), "str")
    for f in dataclasses.fields(ImageOutcome)
}


def _outcome_row(outcome: ImageOutcome) -> dict[str, Any]:
    row = dataclasses.asdict(outcome)
    row["warnings"] = "; ".join(outcome.warnings) or None
    return row


def _buildings_crs(survey: Survey, crs_groups: Iterable[CRS | None]) -> CRS | None:
    """survey buildings CRS, else survey.crs, else the only projected image CRS, else None."""
    from pyproj import CRS

    if survey.buildings is not None and survey.buildings.crs is not None:
        return survey.buildings.crs
    if survey.config.survey.crs:
        return CRS.from_user_input(survey.config.survey.crs)
    projected = [c for c in crs_groups if c is not None and c.is_projected]
    return projected[0] if len(projected) == 1 else None


def _layer_specs(
    survey: Survey,
    outcomes: list[ImageOutcome],
    results: list[tuple[ImageRecord, _ImageLayers]],
) -> list[Any]:
    """The crack, branch, image and 3-D layers of cracks.gpkg (see cracksurvey.io.vector)."""
    from cracksurvey.io.vector import ImageFeatures, crack_layers
    from cracksurvey.vectorize import BRANCH_COLUMNS, CRACK_COLUMNS

    records = {r.name: r for r in survey.images}
    layers = {record.name: image_layers for record, image_layers in results}
    items = []
    for outcome in outcomes:
        record = records[outcome.image]
        georef = record.georef
        image_layers = layers.get(outcome.image)
        footprint = (
            _image_polygon(georef, record.width or 0, record.height or 0) if georef else None
        )
        items.append(ImageFeatures(
            image_row={**_outcome_row(outcome), "geometry": footprint},
            crs=georef.crs if georef else None,
            georeferenced=georef is not None,
            cracks=image_layers.cracks if image_layers else None,
            branches=image_layers.branches if image_layers else None,
            cracks_3d=image_layers.cracks_3d if image_layers else None,
            crs_3d=georef.plane.crs if georef and georef.plane else None,
        ))
    return crack_layers(
        items,
        crack_columns={**_ID_COLUMNS, **CRACK_COLUMNS},
        branch_columns={**_ID_COLUMNS, **BRANCH_COLUMNS},
        image_columns=IMAGE_COLUMNS,
        fallback_crs=_buildings_crs(survey, []),
    )


def _attribute_table(
    frames: list[gpd.GeoDataFrame], columns: Mapping[str, str]
) -> pd.DataFrame:
    """Attributes (no geometry) of all images' cracks or branches, typed even when empty."""
    parts = [pd.DataFrame(f.drop(columns="geometry")) for f in frames if len(f)]
    if parts:
        return pd.concat(parts, ignore_index=True)
    return pd.DataFrame({c: pd.Series([], dtype=object if d == "str" else d)
                         for c, d in columns.items()})


def _building_layer(
    survey: Survey,
    outcomes: list[ImageOutcome],
    summary: pd.DataFrame,
    crs: CRS | None,
) -> gpd.GeoDataFrame:
    """The summary with each building's footprint (else its map images' union) as geometry."""
    import geopandas as gpd

    from cracksurvey.georef import same_crs
    from cracksurvey.summary import building_geometries, footprints_in

    image_footprints: dict[str, list[Any]] = {}
    records = {r.name: r for r in survey.images}
    for outcome in outcomes:
        georef = records[outcome.image].georef
        if (outcome.status == "ok" and outcome.building_id is not None and georef is not None
                and georef.kind == "map" and crs is not None and same_crs(georef.crs, crs)):
            image_footprints.setdefault(outcome.building_id, []).append(
                _image_polygon(georef, outcome.width_px or 0, outcome.height_px or 0)
            )
    geometries = building_geometries(
        list(summary["building_id"]), footprints_in(survey.buildings, crs), image_footprints
    )
    return gpd.GeoDataFrame(summary.copy(), geometry=gpd.GeoSeries(geometries), crs=None)


def _write_outputs(
    survey: Survey,
    out: Path,
    outcomes: list[ImageOutcome],
    results: list[tuple[ImageRecord, _ImageLayers]],
    *,
    model_info: dict[str, Any],
    timings: _Timings,
    started: datetime,
    t0: float,
    damage_scale: DamageScale,
    cache_info: Mapping[str, Any] | None = None,
) -> RunSummary:
    from cracksurvey.io.outputs import (
        describe_input_files,
        write_run_json,
        write_summary_tables,
    )
    from cracksurvey.io.vector import LayerSpec, write_geopackage
    from cracksurvey.report import REPORT_HTML, write_survey_report
    from cracksurvey.summary import SUMMARY_COLUMNS, summarize_buildings
    from cracksurvey.vectorize import BRANCH_COLUMNS, CRACK_COLUMNS

    with timings("summary"):
        specs = _layer_specs(survey, outcomes, results)
        cracks_table = _attribute_table([r.cracks for _, r in results],
                                        {**_ID_COLUMNS, **CRACK_COLUMNS})
        branches_table = _attribute_table([r.branches for _, r in results],
                                          {**_ID_COLUMNS, **BRANCH_COLUMNS})
        coverage = pd.DataFrame(
            [row for _, layers in results for row in layers.coverage],
            columns=["image", "building_id", "area_m2", "cpp_fragments", "cpp_patches"],
        )
        images_table = pd.DataFrame(
            [(o.image, o.building_id, o.status) for o in outcomes],
            columns=["image", "building_id", "status"],
        )
        footprint_ids = (
            list(survey.buildings["building_id"]) if survey.buildings is not None else []
        )
        summary = summarize_buildings(
            cracks_table, branches_table, coverage, images_table, building_ids=footprint_ids,
            damage_scale=damage_scale,
        )
        crs = _buildings_crs(survey, [s.crs for s in specs if not s.name.startswith("cracks_3d")])
        specs.insert(
            len(specs) - sum(s.name.startswith("cracks_3d") for s in specs),
            LayerSpec("buildings", _building_layer(survey, outcomes, summary, crs),
                      "MultiPolygon", crs, "per-building crack summary"),
        )
    with timings("write"):
        write_geopackage(out / "cracks.gpkg", specs,
                         metadata=_gpkg_metadata(survey, model_info, started))
        write_summary_tables(
            out, summary, columns={"building_id": "building id", **SUMMARY_COLUMNS}
        )

    n_cracks = len(cracks_table)
    unassigned = int(cracks_table["building_id"].isna().sum())
    if unassigned:
        warnings.warn(
            f"{unassigned} of {n_cracks} cracks are not assigned to a building (building_id "
            "empty); give their images a building_id in images.csv or add their footprints "
            "to the buildings layer",
            CrackSurveyWarning,
            stacklevel=3,
        )
    layer_info = {
        spec.name: {"crs": _crs_label(spec.crs), "geometry_type": spec.geometry_type,
                    "features": len(spec.frame)}
        for spec in specs
    }
    failed = sum(o.status == "error" for o in outcomes)
    timings.seconds["total"] = time.perf_counter() - t0
    record = {
        "cracksurvey_version": __version__,
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "ok" if not failed else "some images failed",
        "survey_dir": str(survey.root.resolve()),
        "out_dir": str(out.resolve()),
        "model": model_info,
        "damage_scale": {**damage_scale.to_dict(), "source": damage_scale.source},
        "config": survey.config.to_dict(),
        "config_sources": list(survey.config_sources),
        "inputs": {
            "images": [
                {"image": r.path.relative_to(survey.root).as_posix(), "sha256": r.sha256}
                for r in survey.images
            ],
            "files": describe_input_files(
                [survey.survey_yaml_path, survey.images_csv_path, survey.buildings_path,
                 *(Path(s) for s in survey.config_sources if s != "command line")],
                root=survey.root,
            ),
        },
        "timings_s": {k: round(v, 3) for k, v in timings.seconds.items()},
        "cache": dict(cache_info or {}),
        "n_images": len(outcomes),
        "n_images_failed": failed,
        "n_cracks": n_cracks,
        "n_cracks_unassigned": unassigned,
        "images": [_outcome_row(o) for o in outcomes],
        "layers": layer_info,
        "outputs": {
            "geopackage": "cracks.gpkg",
            "summary_csv": "summary.csv",
            "summary_json": "summary.json",
            "report": REPORT_HTML,
            "rasters": sorted(
                p for o in outcomes if o.status == "ok"
                for p in (o.distance_raster, o.mask_raster) if p
            ),
        },
        "environment": _environment(),
    }
    with timings("report"):  # reads back the GeoPackage just written: one source of truth
        write_survey_report(out, run_record=record)
    write_run_json(out / "run.json", record)  # last: its presence marks a finished run
    return RunSummary(
        out_dir=out,
        images=tuple(outcomes),
        buildings=summary,
        layers=layer_info,
        n_cracks=n_cracks,
        n_cracks_unassigned=unassigned,
        record=record,
    )


def _gpkg_metadata(
    survey: Survey, model_info: Mapping[str, Any], started: datetime
) -> dict[str, str]:
    """The run as GeoPackage metadata: what made these layers (run.json has the rest)."""
    return {
        "cracksurvey_version": __version__,
        "model_id": str(model_info["model_id"]),
        "model_sha256": str(model_info["sha256"]),
        "model_threshold_px": f"{model_info['threshold_px']:g}",
        "started_utc": started.isoformat(timespec="seconds"),
        "written_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "survey": survey.root.resolve().name,
        "run_record": "run.json",
    }


def _environment() -> dict[str, str]:
    import rasterio
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "gdal": rasterio.__gdal_version__,
    }
