"""What a run reports: one :class:`ImageOutcome` per image and the :class:`RunSummary`."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cracksurvey.errors import CrackSurveyError
from cracksurvey.survey import ImageRecord, ImageStatus

if TYPE_CHECKING:
    import pandas as pd
    from pyproj import CRS

__all__ = ["IMAGE_COLUMNS", "ImageOutcome", "RunSummary"]

logger = logging.getLogger(__name__)


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
    detection_limit_mm: float | None = None
    width_limit_mm: float | None = None
    n_tiles: int = 0
    precision: str | None = None
    seconds: float = 0.0
    n_cracks: int = 0
    n_bridges: int = 0
    n_unverified: int | None = None  # cracks the crack verifier dropped; None: it did not run
    total_length_m: float = math.nan
    valid_px: int = 0
    wall_px: int | None = None
    semantics: str | None = None
    area_m2: float = math.nan
    cpp_mean: float = math.nan
    cpp_patches: int = 0
    distance_raster: str | None = None
    mask_raster: str | None = None
    semantics_raster: str | None = None
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

    def row(self) -> dict[str, Any]:
        """The outcome as a row of the ``images`` layer and of run.json."""
        row = dataclasses.asdict(self)
        row["warnings"] = "; ".join(self.warnings) or None
        return row


#: Columns (and dtypes) of the images layer: the fields of :class:`ImageOutcome`.
IMAGE_COLUMNS: dict[str, str] = {
    f.name: {
        "int": "Int64",
        "float": "float64",
        "float | None": "float64",
        "int | None": "Int64",
    }.get(str(f.type), "str")
    for f in dataclasses.fields(ImageOutcome)
}


@dataclass(frozen=True)
class RunSummary:
    """What :func:`~cracksurvey.process.process_survey` did.

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


class Timings:
    """Seconds per stage, summed over images (``with timings("vectorize"): ...``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def crs_label(crs: CRS | None) -> str | None:
    """``EPSG:n`` when the CRS has a code, else its name (None stays None)."""
    if crs is None:
        return None
    epsg = crs.to_epsg(min_confidence=90)
    return f"EPSG:{epsg}" if epsg else crs.name


def display_path(record: ImageRecord, root: Path) -> str:
    """The image's path relative to the survey directory (as in messages)."""
    try:
        return record.path.relative_to(root).as_posix()
    except ValueError:
        return str(record.path)


def raster_names(record: ImageRecord) -> tuple[str, str, str]:
    """File names of the image's distance, mask and semantics COGs in ``rasters/``."""
    return (
        f"{record.stem}_distance.tif",
        f"{record.stem}_mask.tif",
        f"{record.stem}_semantics.tif",
    )


def record_fields(record: ImageRecord, raster_dir: Path | None, *, root: Path) -> dict[str, Any]:
    """The fields of an outcome that come from the image record (and its rasters' names)."""
    georef = record.georef
    rasters = {}
    if raster_dir is not None:
        distance, mask, semantics = raster_names(record)
        rasters = dict(
            distance_raster=f"{raster_dir.name}/{distance}",
            mask_raster=f"{raster_dir.name}/{mask}",
            semantics_raster=f"{raster_dir.name}/{semantics}",
        )
    return dict(
        image=record.name,
        path=display_path(record, root),
        building_id=record.building_id,
        facade_id=record.facade_id,
        georef_kind=georef.kind if georef else None,
        georef_source=georef.source if georef else None,
        crs_name=crs_label(georef.crs) if georef else None,
        width_px=record.width,
        height_px=record.height,
        gsd_mm=georef.pixel_size_m * 1000 if georef and georef.pixel_size_m else None,
        sha256=record.sha256,
        warnings=record.warnings,
        **rasters,
    )


def unprocessable(record: ImageRecord, *, root: Path) -> ImageOutcome:
    """The outcome of an image that discovery already marked as failed."""
    return ImageOutcome(
        **record_fields(record, None, root=root),
        status="error",
        message=one_line(record.message or f"{record.name}: cannot be processed"),
    )


def failed(record: ImageRecord, exc: Exception, *, root: Path, raster_dir: Path) -> ImageOutcome:
    """The outcome of an image whose processing raised; its partial rasters are deleted."""
    shown = display_path(record, root)
    message = one_line(str(exc).replace(str(record.path), shown))
    if not isinstance(exc, (CrackSurveyError, OSError)):  # a bug: say so, keep the traceback
        logger.error("%s: unexpected error", shown, exc_info=True)
        message = f"{shown}: {type(exc).__name__}: {message} (please report this)"
    elif shown not in message:
        message = f"{shown}: {message}"
    logger.error("%s", message)
    for name in raster_names(record):
        (raster_dir / name).unlink(missing_ok=True)
    return ImageOutcome(**record_fields(record, None, root=root), status="error", message=message)
