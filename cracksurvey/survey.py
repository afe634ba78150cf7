"""Survey discovery: what is in a survey directory, checked before any work starts.

The survey directory contract (docs/survey.md)::

    survey_dir/
      survey.yaml     optional: a process-config layer (sections as in configs/process/default.yaml)
      buildings.gpkg  optional (or .geojson / .shp): footprints with a ``building_id`` column
      images.csv      optional: one row per image, columns in IMAGES_CSV_COLUMNS
      images/         the images, or the images in survey_dir itself (not both; no recursion):
         *.tif *.tiff            GeoTIFF
         *.jpg *.jpeg *.png      with a world file (.jgw .jpgw .pgw .pngw .tfw .tifw .wld) and
                                 a .prj or .aux.xml, or a gsd_mm in images.csv

images.csv columns (header row required; only ``image`` is mandatory; empty cells = not given):

==============  ===========================================================================
``image``       file name of the image (``a.tif``, or ``images/a.tif``)
``building_id`` building the image shows (must exist in the buildings layer if there is one)
``facade_id``   façade label; names the façade CRS; declares the image a façade image
``gsd_mm``      mm per pixel; must agree with a georeferenced raster within 1 %
``base_x0``     façade plane: X of the base line start (bottom-left corner of the façade as
``base_y0``     seen in the image), metres, survey.crs
``base_x1``     X, Y of the base line end (bottom-right corner), metres, survey.crs
``base_y1``
``base_z``      elevation of the base line, metres
==============  ===========================================================================

The plane columns are all given or all empty in a row. A ``,`` ``;`` or tab delimiter is accepted.

This module is pure: :mod:`cracksurvey.io.survey_files` reads the files and hands over
:class:`ImageFile` objects and csv tokens; :func:`build_records` validates them. Problems that
affect one image (an unreadable or truncated raster, a lat/lon CRS) make that image's record
``status='error'`` so the other images still run; contradictions between the files (images.csv vs
rasters vs survey.yaml vs buildings) raise one :class:`~cracksurvey.errors.ConfigError` listing
all of them, before any work.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pyproj import CRS

from cracksurvey.config import ProcessConfig, suggest
from cracksurvey.errors import ConfigError, CrackSurveyWarning, GeoreferenceError
from cracksurvey.georef import FacadePlane, Georef, GeorefSources, resolve_georef

if TYPE_CHECKING:
    import geopandas as gpd

    from cracksurvey.io.raster import RasterHeader

__all__ = [
    "BUILDINGS_FILES",
    "BUILDING_ID_COLUMN",
    "IMAGES_CSV_COLUMNS",
    "IMAGE_SUFFIXES",
    "PLANE_COLUMNS",
    "WORLD_FILE_SUFFIXES",
    "ImageRecord",
    "ImageRow",
    "ImageStatus",
    "ImageFile",
    "Survey",
    "build_records",
    "check_building_ids",
    "id_text",
    "parse_images_csv",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
WORLD_FILE_SUFFIXES = (".jgw", ".jpgw", ".pgw", ".pngw", ".tfw", ".tifw", ".wld")
BUILDINGS_FILES = ("buildings.gpkg", "buildings.geojson", "buildings.shp")
BUILDING_ID_COLUMN = "building_id"
PLANE_COLUMNS = ("base_x0", "base_y0", "base_x1", "base_y1", "base_z")
IMAGES_CSV_COLUMNS = ("image", "building_id", "facade_id", "gsd_mm", *PLANE_COLUMNS)

ImageStatus = Literal["ok", "error"]


@dataclass(frozen=True)
class ImageRow:
    """One validated images.csv row.

    Parameters
    ----------
    image : str
        Image file name as written in the csv.
    line : int
        Line number in images.csv (header = 1), for messages.
    building_id, facade_id : str or None
    gsd_mm : float or None
    plane : tuple of 5 float or None
        ``(base_x0, base_y0, base_x1, base_y1, base_z)``.
    """

    image: str
    line: int
    building_id: str | None = None
    facade_id: str | None = None
    gsd_mm: float | None = None
    plane: tuple[float, float, float, float, float] | None = None


@dataclass(frozen=True)
class ImageFile:
    """What the io layer read about one image file (no pixels).

    ``header`` is None when the raster could not be opened; ``sources`` is None when the
    header, a sidecar or the file's completeness check failed, and ``error`` is then a one-line
    message naming the file and the fix.
    """

    path: Path
    name: str
    display_name: str
    sha256: str
    size_bytes: int
    header: RasterHeader | None = None
    sources: GeorefSources | None = None
    error: str | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One image of the survey, ready for processing (or marked failed).

    Parameters
    ----------
    path : Path
        Absolute path of the image.
    name : str
        File name (unique in the survey; key of images.csv rows and of outputs).
    building_id, facade_id : str or None
        From images.csv (buildings are otherwise joined by footprint later).
    georef : Georef or None
        None when ``status == 'error'``.
    header : RasterHeader or None
        The raster header (size, bands, dtype, nodata); None when the file cannot be opened.
        ``width``, ``height``, ``band_count``, ``dtype`` and ``nodata`` read it.
    sha256 : str
        Hex digest of the file.
    status : {'ok', 'error'}
    message : str or None
        For ``'error'``: one line naming the file and what to do.
    warnings : tuple of str
        Warnings about this image (e.g. processed in pixel units), for the run summary.
    """

    path: Path
    name: str
    building_id: str | None
    facade_id: str | None
    georef: Georef | None
    header: RasterHeader | None
    sha256: str
    status: ImageStatus = "ok"
    message: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def width(self) -> int | None:
        """Pixels (None without a header)."""
        return self.header.width if self.header else None

    @property
    def height(self) -> int | None:
        """Pixels (None without a header)."""
        return self.header.height if self.header else None

    @property
    def band_count(self) -> int | None:
        return self.header.band_count if self.header else None

    @property
    def dtype(self) -> str | None:
        """numpy dtype name of the first band, e.g. ``'uint8'``."""
        return self.header.dtype if self.header else None

    @property
    def nodata(self) -> float | None:
        return self.header.nodata if self.header else None

    @property
    def stem(self) -> str:
        """File name without extension (unique in the survey; names output rasters)."""
        return Path(self.name).stem


@dataclass(frozen=True, eq=False)
class Survey:
    """A discovered survey directory.

    Parameters
    ----------
    root : Path
        The survey directory.
    image_dir : Path
        ``root / 'images'`` or ``root``.
    config : ProcessConfig
        Effective config (defaults < preset < survey.yaml < --config < CLI).
    images : tuple of ImageRecord
        Sorted by name.
    buildings : geopandas.GeoDataFrame or None
        The buildings layer, ``building_id`` as str; CRS set from survey.crs if it had none.
    buildings_path, images_csv_path, survey_yaml_path : Path or None
        The optional files that were found.
    config_sources : tuple of str
        The config layers that were applied, lowest precedence first.
    """

    root: Path
    image_dir: Path
    config: ProcessConfig
    images: tuple[ImageRecord, ...]
    buildings: gpd.GeoDataFrame | None = None
    buildings_path: Path | None = None
    images_csv_path: Path | None = None
    survey_yaml_path: Path | None = None
    config_sources: tuple[str, ...] = ()

    @property
    def ok_images(self) -> tuple[ImageRecord, ...]:
        """Images that can be processed."""
        return tuple(r for r in self.images if r.status == "ok")

    @property
    def failed_images(self) -> tuple[ImageRecord, ...]:
        """Images that failed discovery (their ``message`` says why)."""
        return tuple(r for r in self.images if r.status == "error")


def _cell(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def parse_images_csv(
    header: Sequence[str], rows: Iterable[tuple[int, Sequence[str]]], *, source: str = "images.csv"
) -> dict[str, ImageRow]:
    """Validate images.csv tokens.

    Parameters
    ----------
    header : sequence of str
        Column names (first line).
    rows : iterable of (line, fields)
        Data rows with their line numbers; blank rows are skipped.
    source : str
        File name for messages.

    Returns
    -------
    dict of str to ImageRow
        Keyed by the ``image`` cell.

    Raises
    ------
    ConfigError
        Missing ``image`` column, unknown or repeated column, wrong field count, a cell that
        is not a number, a partial or degenerate plane, a non-positive gsd, an image named twice.
    """
    columns = [c.strip() for c in header]
    if "image" not in columns:
        raise ConfigError(
            f"{source}: missing column 'image' (found: {', '.join(columns) or 'nothing'}); "
            "the header must name the image column, e.g. image,building_id,facade_id,gsd_mm"
        )
    for column in columns:
        if column not in IMAGES_CSV_COLUMNS:
            raise ConfigError(
                f"{source}: unknown column {column!r}{suggest(column, IMAGES_CSV_COLUMNS)}; "
                f"allowed columns: {', '.join(IMAGES_CSV_COLUMNS)}"
            )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ConfigError(f"{source}: column {repeated[0]!r} appears twice in the header")
    plane_given = [c for c in PLANE_COLUMNS if c in columns]
    if plane_given and len(plane_given) != len(PLANE_COLUMNS):
        missing = [c for c in PLANE_COLUMNS if c not in columns]
        raise ConfigError(
            f"{source}: façade plane columns incomplete, missing {', '.join(missing)}; "
            f"give all of {', '.join(PLANE_COLUMNS)} or none"
        )

    parsed: dict[str, ImageRow] = {}
    for line, fields in rows:
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(columns):
            raise ConfigError(
                f"{source} line {line}: {len(fields)} fields but the header has {len(columns)}; "
                "check the delimiters and quoting of that line"
            )
        cells = {c: _cell(f) for c, f in zip(columns, fields)}
        image = cells["image"]
        if image is None:
            raise ConfigError(f"{source} line {line}: empty 'image' cell")
        numbers = {
            c: _number(cells[c], source=source, line=line, column=c)
            for c in ("gsd_mm", *PLANE_COLUMNS)
            if c in cells
        }
        gsd_mm = numbers.get("gsd_mm")
        if gsd_mm is not None and gsd_mm <= 0:
            raise ConfigError(f"{source} line {line}: gsd_mm={gsd_mm:g} must be > 0")
        plane_values = [numbers.get(c) for c in PLANE_COLUMNS]
        plane: tuple[float, float, float, float, float] | None = None
        if any(v is not None for v in plane_values):
            if any(v is None for v in plane_values):
                empty = [c for c, v in zip(PLANE_COLUMNS, plane_values) if v is None]
                raise ConfigError(
                    f"{source} line {line}: façade plane incomplete, empty {', '.join(empty)}; "
                    f"fill all of {', '.join(PLANE_COLUMNS)} or none"
                )
            plane = tuple(plane_values)  # type: ignore[assignment]
        if image in parsed:
            raise ConfigError(
                f"{source} line {line}: image {image!r} is already described on line "
                f"{parsed[image].line}; keep one row per image"
            )
        parsed[image] = ImageRow(
            image=image,
            line=line,
            building_id=cells.get("building_id"),
            facade_id=cells.get("facade_id"),
            gsd_mm=gsd_mm,
            plane=plane,
        )
    return parsed


def _number(cell: str | None, *, source: str, line: int, column: str) -> float | None:
    if cell is None:
        return None
    try:
        value = float(cell)
    except ValueError:
        hint = " (use a dot as decimal separator)" if "," in cell else ""
        raise ConfigError(
            f"{source} line {line}: {column}={cell!r} is not a number{hint}"
        ) from None
    if not math.isfinite(value):
        raise ConfigError(f"{source} line {line}: {column}={cell!r} is not a finite number")
    return value


def id_text(value: Any) -> str | None:
    """Building/façade id as text (12, 12.0 and '12' all give '12'); None for missing."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    text = str(value).strip()
    return text or None


def check_building_ids(columns: Sequence[str], ids: Iterable[Any], *, source: str) -> set[str]:
    """Check a buildings layer: a ``building_id`` column without empty values.

    Returns
    -------
    set of str
        The building ids as text.
    """
    if BUILDING_ID_COLUMN not in columns:
        others = [c for c in columns if c != "geometry"]
        raise ConfigError(
            f"{source}: no {BUILDING_ID_COLUMN!r} column{suggest(BUILDING_ID_COLUMN, others)} "
            f"(columns: {', '.join(others) or 'none'}); add or rename the id column to "
            f"{BUILDING_ID_COLUMN!r}"
        )
    texts = [id_text(v) for v in ids]
    empty = sum(t is None for t in texts)
    if empty:
        raise ConfigError(
            f"{source}: {empty} feature(s) have an empty {BUILDING_ID_COLUMN}; fill them or "
            "delete those features"
        )
    return {t for t in texts if t is not None}


def _match_row(image: str, names: Sequence[str], image_dir_rel: str) -> str | None:
    """The file name an images.csv ``image`` cell refers to, or None."""
    value = image.replace("\\", "/")
    if image_dir_rel and value.startswith(image_dir_rel + "/"):
        value = value[len(image_dir_rel) + 1 :]
    elif value.startswith("./"):
        value = value[2:]
    return value if value in names else None


def build_records(
    image_files: Sequence[ImageFile],
    rows: Mapping[str, ImageRow],
    config: ProcessConfig,
    *,
    building_ids: set[str] | None = None,
    csv_source: str = "images.csv",
    buildings_source: str = "buildings",
    image_dir_rel: str = "",
) -> tuple[ImageRecord, ...]:
    """Join image files with images.csv and survey settings into image records.

    Parameters
    ----------
    image_files : sequence of ImageFile
        One per image file.
    rows : mapping of str to ImageRow
        Parsed images.csv (empty if there is none).
    config : ProcessConfig
        Effective config (``survey.crs``, ``survey.gsd_mm``).
    building_ids : set of str, optional
        Ids of the buildings layer, if there is one.
    csv_source, buildings_source : str
        File names for messages.
    image_dir_rel : str
        The image directory relative to the survey root (``'images'`` or ``''``).

    Returns
    -------
    tuple of ImageRecord
        Sorted by name. Images in pixel units emit a :class:`CrackSurveyWarning`.

    Raises
    ------
    ConfigError
        All contradictions found, one per line, before any work.
    """
    problems: list[str] = []
    names = [f.name for f in image_files]
    if not image_files:
        raise ConfigError("no images found")

    stems: dict[str, str] = {}
    for name in sorted(names):
        stem = Path(name).stem
        if stem in stems:
            problems.append(
                f"{stems[stem]} and {name} have the same name without extension, so their "
                "outputs and world files would collide; rename one"
            )
        stems.setdefault(stem, name)

    by_name: dict[str, ImageRow] = {}
    for image, row in rows.items():
        match = _match_row(image, names, image_dir_rel)
        if match is None:
            lower = {n.lower(): n for n in names}
            hint = (
                f" (did you mean {lower[image.lower()]!r}?)"
                if image.lower() in lower
                else suggest(image, names)
            )
            where = f"{image_dir_rel}/" if image_dir_rel else "the survey directory"
            problems.append(
                f"{csv_source} line {row.line}: image {image!r} does not exist in {where}{hint}; "
                "fix the name or delete the row"
            )
            continue
        if match in by_name:
            problems.append(
                f"{csv_source} line {row.line}: image {match!r} is already described on line "
                f"{by_name[match].line}; keep one row per image"
            )
            continue
        by_name[match] = row

    survey_crs = CRS.from_user_input(config.survey.crs) if config.survey.crs else None
    facades: dict[str, ImageRow] = {}
    records: list[ImageRecord] = []
    for image_file in sorted(image_files, key=lambda f: f.name):
        image_row = by_name.get(image_file.name)
        label = image_file.display_name
        if image_row is not None:
            problems.extend(_check_row_ids(image_row, building_ids, csv_source, buildings_source))
            problems.extend(_check_facade_consistency(image_row, facades, csv_source))
        plane: FacadePlane | None = None
        if image_row is not None and image_row.plane is not None:
            if survey_crs is None:
                problems.append(
                    f"{csv_source} line {image_row.line}: a façade plane is given for {image_file.name} but "
                    "survey.yaml has no survey.crs to place it in; add e.g. "
                    "'survey: {crs: EPSG:32633}'"
                )
                continue
            try:
                x0, y0, x1, y1, z = image_row.plane
                plane = FacadePlane((x0, y0), (x1, y1), z, survey_crs)
            except GeoreferenceError as exc:
                problems.append(f"{csv_source} line {image_row.line}: {exc}")
                continue
        record_kwargs: dict[str, Any] = dict(
            path=image_file.path,
            name=image_file.name,
            building_id=image_row.building_id if image_row else None,
            facade_id=image_row.facade_id if image_row else None,
            header=image_file.header,
            sha256=image_file.sha256,
        )
        if image_file.error is not None or image_file.sources is None:
            message = image_file.error or f"{label}: could not be read"
            logger.error(message)
            records.append(
                ImageRecord(georef=None, status="error", message=message, **record_kwargs)
            )
            continue
        try:
            georef = resolve_georef(
                image_file.sources,
                name=label,
                facade_id=image_row.facade_id if image_row else None,
                gsd_mm=image_row.gsd_mm if image_row else None,
                plane=plane,
                survey_crs=survey_crs,
                survey_gsd_mm=config.survey.gsd_mm,
            )
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        except GeoreferenceError as exc:
            logger.error("%s", exc)
            records.append(
                ImageRecord(georef=None, status="error", message=str(exc), **record_kwargs)
            )
            continue
        notes: tuple[str, ...] = ()
        if georef.kind == "pixel":
            note = (
                f"{label}: no georeferencing (no GeoTIFF CRS, world file or gsd_mm), "
                "processed in pixel units; add a world file + .prj, or gsd_mm in images.csv "
                "or survey.yaml, to get metres"
            )
            notes = (note,)
        logger.info("%s: %s georeferencing from %s", label, georef.kind, georef.source)
        records.append(ImageRecord(georef=georef, warnings=notes, **record_kwargs))

    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ConfigError(
            f"survey inputs are contradictory ({count}), nothing was processed:\n  - "
            + "\n  - ".join(problems)
        )
    for record in records:  # only once the survey is valid: a failing run does not warn
        for note in record.warnings:
            warnings.warn(note, CrackSurveyWarning, stacklevel=3)
    return tuple(records)


def _check_row_ids(
    row: ImageRow, building_ids: set[str] | None, csv_source: str, buildings_source: str
) -> list[str]:
    if building_ids is None or row.building_id is None or row.building_id in building_ids:
        return []
    return [
        f"{csv_source} line {row.line}: building_id {row.building_id!r} is not in "
        f"{buildings_source}{suggest(row.building_id, sorted(building_ids))}; "
        "fix the id or add the building"
    ]


def _check_facade_consistency(
    row: ImageRow, facades: dict[str, ImageRow], csv_source: str
) -> list[str]:
    """Images of the same façade must agree on building and plane."""
    if row.facade_id is None:
        return []
    first = facades.setdefault(row.facade_id, row)
    if first is row:
        return []
    problems = []
    if first.building_id and row.building_id and first.building_id != row.building_id:
        problems.append(
            f"{csv_source} line {row.line}: facade_id {row.facade_id!r} belongs to building "
            f"{first.building_id!r} on line {first.line} but to {row.building_id!r} here"
        )
    if first.plane and row.plane and first.plane != row.plane:
        problems.append(
            f"{csv_source} line {row.line}: facade_id {row.facade_id!r} has a different façade "
            f"plane than on line {first.line}; one façade has one plane"
        )
    return problems
