"""One image through the two cached stages of a run: predict, then measure.

**Predict** (:meth:`ImageRun.predict`): the engine writes the image's distance and mask COGs
and returns its sparse skeleton with widths; the three are cached together as the image's
prediction (:class:`cracksurvey.io.cache.PredictionCache`), keyed by what they depend on: the
image content, the model checksum, the threshold, the precision, the tiling and the
georeferencing the COGs carry.

**Measure** (:func:`measure_image`): the skeleton is vectorized into cracks and branches, their
lengths put in metres, CPP counted on the mask, and cracks and CPP patches joined to buildings.
The result (outcome, layers, coverage) is cached apart (:class:`cracksurvey.io.cache.ImageCache`),
keyed by the prediction's key plus the vectorize and CPP settings, the georeferencing and the
image's ids. A rerun that changes only what is measured reuses every prediction: no network.

Building join:

- an image with a ``building_id`` in images.csv belongs to that building, with all its cracks
  and its whole imaged area (images.csv overrides what the rasters say);
- other map-georeferenced images are joined to the buildings layer by footprint: a crack goes
  to the footprint it overlaps most (footprints are reprojected to the image CRS when the CRSs
  differ), a CPP patch to the footprint holding its centre, and the imaged area of a building
  is its footprint clipped to the image extent (nodata areas inside are not subtracted);
- cracks matching no building have ``building_id`` None.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.errors import NotGeoreferencedWarning

from cracksurvey import __version__
from cracksurvey.config import ProcessConfig
from cracksurvey.engine import Engine
from cracksurvey.gaps import bridge_sparse_skeleton
from cracksurvey.georef import Georef, facade_to_world
from cracksurvey.io.cache import (
    RASTER_NAMES,
    SKELETON_NPZ,
    CacheEntry,
    ImageCache,
    PredictionCache,
    cache_key,
    publish_raster,
    read_skeleton,
    write_skeleton,
)
from cracksurvey.io.outputs import read_band_window, read_mask_strips
from cracksurvey.measure.continuity import cracks_per_patch, patch_origins
from cracksurvey.measure.width import WIDTH_METHOD
from cracksurvey.predict import effective_precision, resolve_device
from cracksurvey.process.facade import (
    SemanticsModel,
    keep_pixels,
    predict_semantics,
    read_semantics,
    surface_of,
)
from cracksurvey.process.outcome import ImageOutcome, Timings, raster_names, record_fields
from cracksurvey.process.verify_stage import Verifier, apply_verifier, verifier_for, verifier_key
from cracksurvey.progress import ProgressCallback
from cracksurvey.semantics import WALL
from cracksurvey.skeleton import TileSkeleton
from cracksurvey.summary import join_cracks_to_footprints, join_points_to_footprints
from cracksurvey.survey import ImageRecord
from cracksurvey.tiling import MASK_NODATA
from cracksurvey.vectorize import vectorize_skeleton

__all__ = ["ImageLayers", "ImageRun", "Prediction", "image_footprint", "measure_image"]

#: Version of what the cache entries hold, within one package version (part of every key).
ENTRY_FORMAT = 5


@dataclass
class ImageLayers:
    """The measured layers of one image, and what it contributes to each building."""

    cracks: gpd.GeoDataFrame
    branches: gpd.GeoDataFrame
    cracks_3d: gpd.GeoDataFrame | None
    coverage: list[dict[str, Any]]


@dataclass(frozen=True)
class Prediction:
    """An image's prediction as cached: COGs, sparse skeleton and how they were made."""

    distance_path: Path
    mask_path: Path
    semantics_path: Path
    skeleton: TileSkeleton
    threshold_px: float
    n_tiles: int
    precision: str
    seconds: float
    semantics: str  # how the class raster was made: "model", or why not

    @classmethod
    def from_entry(cls, entry: CacheEntry) -> Prediction:
        distance, mask, semantics = (entry.path / name for name in RASTER_NAMES)
        skeleton = read_skeleton(entry.path / SKELETON_NPZ)
        return cls(distance, mask, semantics, skeleton, **entry.record)


def image_footprint(georef: Georef, width: int, height: int) -> Any:
    """The outline of an image in its own coordinates (a shapely Polygon)."""
    corners = [(0, 0), (width, 0), (width, height), (0, height)]
    return shapely.Polygon([georef.transform @ c for c in corners])


def cracks_to_3d(geometries: gpd.GeoSeries, plane: Any) -> np.ndarray:
    """Façade-frame crack geometries to 3-D (X, Y, Z) in the plane's CRS."""

    def to_world(coords: np.ndarray) -> np.ndarray:
        x, y, z = facade_to_world(coords[:, 0], coords[:, 1], plane)
        return np.column_stack([x, y, z])

    flat = shapely.force_3d(np.asarray(geometries.values), 0.0)
    return shapely.transform(flat, to_world, include_z=True)


# --------------------------------------------------------------------------------------------
# Measure
# --------------------------------------------------------------------------------------------
def measure_image(
    record: ImageRecord,
    prediction: Prediction,
    *,
    config: ProcessConfig,
    footprints: gpd.GeoDataFrame | None,
    raster_dir: Path,
    root: Path,
    timings: Timings,
    detection_limit_px: float | None = None,
    verifier: Verifier | None = None,
) -> tuple[ImageOutcome, ImageLayers]:
    """Vectorize and measure one image's prediction; join it to buildings.

    ``detection_limit_px``: the narrowest crack the model finds (its card), for the image's
    detection limit in millimetres. ``verifier``: the crack verifier and its threshold
    (:func:`verifier_for`), or None.
    """
    georef = record.georef
    assert georef is not None
    height, width = record.height or 0, record.width or 0
    semantics = read_semantics(
        prediction.semantics_path, height=height, width=width, applied=prediction.semantics
    )
    skeleton = prediction.skeleton
    keep = keep_pixels(semantics, skeleton.rows, skeleton.cols, config.semantics.keep_on)
    if not keep.all():
        skeleton = skeleton.take(keep)
    vcfg = config.vectorize
    with timings("bridge"):
        bridge_rows, bridge_cols, bridge_distance, n_bridges = bridge_sparse_skeleton(
            skeleton.rows,
            skeleton.cols,
            read_band_window(prediction.distance_path),
            height=height,
            width=width,
            max_gap_px=vcfg.bridge_gap_px,
            max_valley_px=vcfg.valley_px(prediction.threshold_px),
        )
    bridged_px = np.concatenate([np.zeros(len(skeleton), bool), np.ones(bridge_rows.size, bool)])
    # bridge pixels: no width (nothing was measured there)
    pixels = TileSkeleton.concatenate(
        [
            skeleton,
            TileSkeleton(
                bridge_rows, bridge_cols, np.full(bridge_rows.size, np.nan), bridge_distance
            ),
        ]
    )
    with timings("vectorize"):
        cracks, branches = vectorize_skeleton(
            pixels.rows,
            pixels.cols,
            transform=georef.transform,
            width_px=pixels.width_px,
            width_sd_px=pixels.width_sd_px,
            below_limit=pixels.below_limit,
            distance_px=pixels.distance_px,
            threshold_px=prediction.threshold_px,
            pixel_size_m=georef.pixel_size_m,
            min_spur_px=vcfg.min_spur_px,
            min_crack_length_px=vcfg.min_crack_length_px,
            smoothing_px=vcfg.smoothing_px,
            bridged_px=bridged_px,
        )
    cracks["surface"] = _surfaces(cracks, semantics, georef.transform)
    with timings("verify"):
        cracks, branches, n_unverified = apply_verifier(
            record, cracks, branches, georef.transform, verifier
        )
    # length_m is in CRS units: metres for façade frames, scaled for e.g. US-foot map CRSs,
    # unknown (NaN) in pixel units.
    for frame in (cracks, branches):
        if georef.kind == "pixel":
            frame["length_m"] = np.nan
        elif georef.metres_per_unit not in (None, 1.0):
            frame["length_m"] = frame["length_m"] * georef.metres_per_unit

    with timings("cpp"):
        counts, origins, n_valid = _patch_counts(prediction.mask_path, config)
    nodata_px = semantics.pixels(255, height=height, width=width)
    wall_px = semantics.pixels(WALL, height=height, width=width)
    # imaged area: wall only where the semantics ran; valid pixels less constant fill otherwise
    area_px = wall_px if semantics.applied == "model" else max(0, n_valid - nodata_px)

    with timings("join"):
        building, coverage = _join_buildings(
            record,
            cracks,
            counts=counts,
            origins=origins,
            n_valid=area_px,
            footprints=footprints,
            patch_px=config.cpp.patch_px,
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
        **record_fields(record, raster_dir, root=root),
        status="ok",
        n_tiles=prediction.n_tiles,
        precision=prediction.precision,
        seconds=prediction.seconds,
        n_cracks=len(cracks),
        n_bridges=n_bridges,
        n_unverified=n_unverified,
        total_length_m=total,
        valid_px=n_valid,
        wall_px=wall_px if semantics.applied == "model" else None,
        semantics=semantics.applied,
        detection_limit_mm=(
            detection_limit_px * georef.pixel_size_m * 1000.0
            if detection_limit_px and georef.pixel_size_m and georef.kind != "pixel"
            else None
        ),
        width_limit_mm=width_limit_mm(skeleton.limit_px, georef),
        area_m2=area_px * georef.pixel_size_m**2 if georef.pixel_size_m else math.nan,
        cpp_mean=float(counts.mean()) if counts.size else math.nan,
        cpp_patches=int(counts.size),
    )
    return outcome, ImageLayers(cracks, branches, cracks_3d, coverage)


def width_limit_mm(limit_px: np.ndarray, georef: Georef) -> float | None:
    """An image's measurable crack width in millimetres: the median limit of its measured
    skeleton pixels (docs/method.md, "Crack width") times the GSD; None without a GSD."""
    finite = limit_px[np.isfinite(limit_px)]
    if not finite.size or not georef.pixel_size_m or georef.kind == "pixel":
        return None
    return float(np.median(finite)) * georef.pixel_size_m * 1000.0


def _surfaces(cracks: gpd.GeoDataFrame, semantics: Any, transform: Any) -> pd.Series:
    """Majority surface of each crack, from its vertices."""
    if len(cracks) == 0:
        return pd.Series([], dtype="str")
    xy, index = shapely.get_coordinates(cracks.geometry.values, return_index=True)
    col, row = ~transform @ (xy[:, 0], xy[:, 1])
    names = surface_of(semantics, np.floor(row), np.floor(col), index, len(cracks))
    return pd.Series(names, index=cracks.index, dtype="str")


def _patch_counts(mask_path: Path, config: ProcessConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """CPP fragment count and origin of each counted patch, and the number of valid pixels.

    The mask COG is read one row of patches at a time (memory: ``patch_px`` x width bytes).
    """
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
    georef = record.georef
    assert georef is not None
    if record.building_id is not None or georef.kind != "map" or footprints is None:
        area_per_px = georef.pixel_size_m**2 if georef.pixel_size_m else math.nan
        coverage = dict(
            image=record.name,
            building_id=record.building_id,
            area_m2=n_valid * area_per_px,
            cpp_fragments=int(counts.sum()),
            cpp_patches=int(counts.size),
        )
        return np.full(len(cracks), record.building_id, dtype=object), [coverage]
    building = join_cracks_to_footprints(cracks.geometry, footprints)
    # patch centres (clipped to the image for partial border patches) to map coordinates
    rows = origins[:, 0] + np.minimum(patch_px, (record.height or 0) - origins[:, 0]) / 2.0
    cols = origins[:, 1] + np.minimum(patch_px, (record.width or 0) - origins[:, 1]) / 2.0
    x, y = georef.transform @ (cols, rows)
    patch_building = join_points_to_footprints(np.column_stack([x, y]), footprints)
    polygon = image_footprint(georef, record.width or 0, record.height or 0)
    square_m = (georef.metres_per_unit or 1.0) ** 2
    coverage_rows = []
    overlapping = footprints[footprints.intersects(polygon)]
    for building_id, footprint in zip(overlapping["building_id"], overlapping.geometry):
        in_building = patch_building == building_id
        coverage_rows.append(
            dict(
                image=record.name,
                building_id=building_id,
                area_m2=float(footprint.intersection(polygon).area * square_m),
                cpp_fragments=int(counts[in_building].sum()),
                cpp_patches=int(in_building.sum()),
            )
        )
    return building, coverage_rows


# --------------------------------------------------------------------------------------------
# The two stages through their caches
# --------------------------------------------------------------------------------------------
@dataclass
class ImageRun:
    """What the images of one run share; runs an image through the stage caches."""

    engine: Engine
    predictions: PredictionCache
    results: ImageCache
    config: ProcessConfig
    model_sha256: str
    root: Path
    raster_dir: Path
    timings: Timings
    footprints_for: Callable[[Georef], gpd.GeoDataFrame | None]
    buildings_sha256: str | None
    semantics_model: SemanticsModel
    detection_limit_px: float | None = None
    reused: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)
    predictions_reused: list[str] = field(default_factory=list)
    predictions_computed: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    prediction_keys: set[str] = field(default_factory=set)

    @functools.cached_property
    def verifier(self) -> Verifier | None:
        return verifier_for(self.config, self.model_sha256)

    def needs_prediction(self, record: ImageRecord) -> bool:
        """Whether the record's prediction will likely be computed (no committed entry)."""
        if record.status == "error" or record.georef is None:
            return False
        return not self.predictions.has(self.prediction_key(record))

    def image(
        self,
        record: ImageRecord,
        *,
        progress: ProgressCallback | None = None,
        next_image: Path | None = None,
    ) -> tuple[ImageOutcome, ImageLayers]:
        """The image's outcome and layers, each stage from its cache entry or computed into one.

        ``next_image``: the next image whose prediction is computed; the engine starts it
        early (:meth:`cracksurvey.engine.Engine.run_image`).
        """
        assert record.georef is not None
        prediction_key = self.prediction_key(record)
        entry = self.predictions.lookup(prediction_key)
        if entry is None:
            entry = self.predict(record, prediction_key, progress, next_image)
            self.predictions_computed.append(record.name)
        else:
            self.predictions_reused.append(record.name)
        self.prediction_keys.add(prediction_key)
        prediction = Prediction.from_entry(entry)

        key = self.result_key(record, prediction_key)
        result = self.results.lookup(key)
        if result is None:
            result = self.measure(record, key, prediction)
            self.computed.append(record.name)
        else:
            self.reused.append(record.name)
        self.keys.add(key)
        with self.timings("cache"):
            for source, target in zip(
                (prediction.distance_path, prediction.mask_path, prediction.semantics_path),
                raster_names(record),
            ):
                publish_raster(source, self.raster_dir / target)
        outcome = ImageOutcome(
            **{**result.record["outcome"], "warnings": tuple(result.record["outcome"]["warnings"])}
        )
        frames = result.frames
        return outcome, ImageLayers(
            frames["cracks"], frames["branches"], frames["cracks_3d"], result.record["coverage"]
        )

    def predict(
        self,
        record: ImageRecord,
        key: str,
        progress: ProgressCallback | None,
        next_image: Path | None,
    ) -> CacheEntry:
        """Run the engine on the image into a staging folder; commit it as prediction ``key``."""
        georef = record.georef
        assert georef is not None
        staging = self.predictions.stage()
        try:
            distance_path, mask_path, semantics_path = (staging / name for name in RASTER_NAMES)
            with self.timings("engine"), warnings.catch_warnings():
                # The georeferencing was resolved at discovery (world files, images.csv, pixel
                # units); rasterio's warning about rasters without a geotransform is noise here.
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                result = self.engine.run_image(
                    record.path,
                    distance_path=distance_path,
                    mask_path=mask_path,
                    progress=progress,
                    next_image=next_image,
                    # the COGs overlay the crack layers: same transform and CRS, as resolved
                    georeference=(georef.transform, georef.crs.to_wkt() if georef.crs else None),
                )
            with self.timings("semantics"), warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                semantics = predict_semantics(
                    record, self.config, self.semantics_model, semantics_path
                )
            with self.timings("cache"):
                write_skeleton(staging / SKELETON_NPZ, result.skeleton)
                return self.predictions.commit(
                    staging,
                    key,
                    {
                        "threshold_px": result.threshold_px,
                        "n_tiles": result.n_tiles,
                        "precision": result.precision,
                        "seconds": result.seconds,
                        "semantics": semantics.applied,
                    },
                )
        finally:
            self.predictions.discard(staging)  # gone already when committed

    def measure(self, record: ImageRecord, key: str, prediction: Prediction) -> CacheEntry:
        """Measure the image's prediction into a staging folder; commit it as result ``key``."""
        assert record.georef is not None
        staging = self.results.stage()
        try:
            outcome, layers = measure_image(
                record,
                prediction,
                config=self.config,
                footprints=self.footprints_for(record.georef),
                raster_dir=self.raster_dir,
                root=self.root,
                timings=self.timings,
                detection_limit_px=self.detection_limit_px,
                verifier=self.verifier,
            )
            with self.timings("cache"):
                return self.results.commit(
                    staging,
                    key,
                    {"outcome": dataclasses.asdict(outcome), "coverage": layers.coverage},
                    {
                        "cracks": layers.cracks,
                        "branches": layers.branches,
                        "cracks_3d": layers.cracks_3d,
                    },
                )
        finally:
            self.results.discard(staging)

    def prediction_key(self, record: ImageRecord) -> str:
        """Everything the image's COGs and skeleton depend on."""
        georef = record.georef
        assert georef is not None
        sections = self.config.to_dict()
        return cache_key(
            {
                "stage": "predict",
                "cracksurvey": __version__,
                "entry_format": [ENTRY_FORMAT, WIDTH_METHOD],
                "image": {"sha256": record.sha256, "size": [record.width, record.height]},
                "model": {
                    "sha256": self.model_sha256,
                    "threshold_px": self.engine.threshold_px,
                    "precision": sections["model"]["precision"],
                    "device": sections["model"]["device"],
                    # what auto resolves to (the CPU kind, CRACKSURVEY_PRECISION), as the
                    # engine records it: a prediction made in another precision is not reused
                    "precision_run": effective_precision(
                        sections["model"]["precision"], resolve_device(sections["model"]["device"])
                    ),
                },
                "tiling": sections["tiling"],
                "semantics": {
                    **{k: v for k, v in sections["semantics"].items() if k != "keep_on"},
                    "model": self.semantics_sha256(),
                    "gsd_m": georef.pixel_size_m,
                },
                # the COGs carry the resolved georeferencing
                "georeference": {
                    "transform": list(georef.transform)[:6],
                    "crs": georef.crs.to_wkt() if georef.crs is not None else None,
                },
            }
        )

    def semantics_sha256(self) -> str | None:
        """Checksum of the semantics model (None when semantics are off)."""
        if self.config.semantics.mode == "off":
            return None
        return self.semantics_model.sha256

    def result_key(self, record: ImageRecord, prediction_key: str) -> str:
        """Everything the image's layers and outcome depend on, its prediction included."""
        georef = record.georef
        assert georef is not None
        plane = georef.plane
        sections = self.config.to_dict()
        joined_by_footprint = record.building_id is None and georef.kind == "map"
        return cache_key(
            {
                "stage": "measure",
                "prediction": prediction_key,
                "image": {
                    "name": record.name,
                    "path": record_fields(record, None, root=self.root)["path"],
                    "building_id": record.building_id,
                    "facade_id": record.facade_id,
                    "warnings": list(record.warnings),
                },
                "georef": {
                    "kind": georef.kind,
                    "source": georef.source,
                    "pixel_size_m": georef.pixel_size_m,
                    "metres_per_unit": georef.metres_per_unit,
                    "plane": None
                    if plane is None
                    else {
                        "start_xy": list(plane.start_xy),
                        "end_xy": list(plane.end_xy),
                        "base_z": plane.base_z,
                        "crs": plane.crs.to_wkt(),
                    },
                },
                "config": {name: sections[name] for name in ("vectorize", "cpp")},
                "keep_on": sections["semantics"]["keep_on"],
                "verifier": verifier_key(self.verifier),
                "detection_limit_px": self.detection_limit_px,
                "buildings": self.buildings_sha256 if joined_by_footprint else None,
            }
        )
