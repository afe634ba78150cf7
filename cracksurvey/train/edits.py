"""What an engineer's corrections of a processed survey say, image by image (the field loop).

An engineer opens a processed survey's ``cracks.gpkg`` in QGIS and corrects it:

- **deleted cracks**: false cracks removed from the ``cracks`` layer;
- **kept cracks**: the features left as they were (they still have their ``image``);
- **drawn cracks**: lines added to the ``cracks`` layer where a crack was missed. Their
  ``image`` is empty; a drawn crack belongs to every image of its layer whose footprint it
  crosses. Its width is read from a ``width_mm`` column if the user added one, else from
  ``width_mean_mm`` (the attribute form shows it for new features too); a crack with neither
  gets ``default_width_mm`` and a warning;
- **reviewed areas**: polygons of a ``reviewed`` layer (any layer named ``reviewed`` or
  ``reviewed_*``, in the CRS of the crack layer it reviews), meaning "every crack in here is in
  the crack layer, and every line of the crack layer in here is a crack".

Samples only come from reviewed areas (:mod:`cracksurvey.train.survey_samples`). Kept and drawn
cracks outside the reviewed areas still count as cracks for the distance near an area's border;
drawn cracks that touch no reviewed area are not used (a warning says how many). The
``crack_branches`` layer is derived from ``cracks`` and ignored.

Pure: :mod:`cracksurvey.io.edits` reads the GeoPackage, run.json and the survey; here the
layers are matched with the images and every edit is placed in the pixel frame of a window of
its image (``~georef.transform`` maps x, y to col, row).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray
from pyproj import CRS

from ..errors import DatasetError, GeoreferenceError
from ..georef import Georef, same_crs

if TYPE_CHECKING:
    import geopandas as gpd

    from ..survey import ImageRecord

__all__ = [
    "REVIEWED_LAYER",
    "ImageEdits",
    "SurveyEdits",
    "crack_widths_mm",
    "match_survey_edits",
    "place_edits",
]

#: Name of the layer of reviewed areas (``reviewed`` or ``reviewed_<anything>``).
REVIEWED_LAYER = "reviewed"

Window = tuple[int, int, int, int]  # row0, row1, col0, col1 (end exclusive)


@dataclass(frozen=True)
class ImageEdits:
    """The edits that fall on one image, in the pixel frame of a window of it.

    Attributes
    ----------
    survey : str
        Label of the survey (its output folder), for messages and the lineage.
    image : str
        Image file name (the ``image`` column of the layers).
    window : (row0, row1, col0, col1)
        Image window that holds the reviewed areas plus a margin (pixels, end exclusive).
    lines : list of shapely geometries
        Crack centrelines (kept and drawn) in window pixel coordinates (x = col, y = row).
    widths_px : ndarray of shape (n_lines,), float64
        Width of each line in pixels (NaN in pixel units).
    reviewed : list of shapely geometries
        Reviewed polygons in window pixel coordinates.
    n_kept, n_drawn : int
        Kept and drawn cracks of the image (all of them, reviewed or not).
    """

    survey: str
    image: str
    window: Window
    lines: list[Any]
    widths_px: NDArray[np.float64]
    reviewed: list[Any]
    n_kept: int = 0
    n_drawn: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        row0, row1, col0, col1 = self.window
        return row1 - row0, col1 - col0


def crack_widths_mm(
    cracks: gpd.GeoDataFrame, *, default_width_mm: float
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Width of each crack feature (mm), and which features had none.

    ``width_mm`` (a column the user added) wins over ``width_mean_mm``; a missing, zero or
    negative value falls through; a feature with neither gets ``default_width_mm``.
    """
    n = len(cracks)
    widths = np.full(n, np.nan)
    for column in ("width_mean_mm", "width_mm"):  # later columns win
        if column in cracks:
            values = np.asarray(
                [_finite_positive(v) for v in cracks[column].to_numpy()], dtype=np.float64
            )
            widths = np.where(np.isfinite(values), values, widths)
    missing = ~np.isfinite(widths)
    return np.where(missing, default_width_mm, widths), missing


def _finite_positive(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) and number > 0 else math.nan


def _to_pixels(geometries: Sequence[Any], transform: Affine) -> list[Any]:
    """Geometries in ``transform``'s x, y to its pixel coordinates (x = col, y = row)."""
    inverse = ~transform
    matrix = np.array([[inverse.a, inverse.b], [inverse.d, inverse.e]])
    offset = np.array([inverse.c, inverse.f])
    return [shapely.transform(g, lambda xy: xy @ matrix.T + offset) for g in geometries]


def _window(polygons_px: Sequence[Any], width: int, height: int, margin_px: int) -> Window | None:
    frame = shapely.box(0, 0, width, height)
    inside = [shapely.intersection(g, frame) for g in polygons_px]
    inside = [g for g in inside if not g.is_empty and g.area > 0]
    if not inside:
        return None
    x0, y0, x1, y1 = shapely.total_bounds(np.asarray(inside, dtype=object))
    return (
        max(0, math.floor(y0) - margin_px),
        min(height, math.ceil(y1) + margin_px),
        max(0, math.floor(x0) - margin_px),
        min(width, math.ceil(x1) + margin_px),
    )


def place_edits(
    survey: str,
    image: str,
    georef: Georef,
    width: int,
    height: int,
    lines: Sequence[Any],
    widths_mm: Sequence[float],
    reviewed: Sequence[Any],
    *,
    margin_px: int,
    n_kept: int = 0,
    n_drawn: int = 0,
) -> ImageEdits | None:
    """The edits of one image in the pixel frame of the window around its reviewed areas.

    Parameters
    ----------
    survey, image : str
        Labels (messages, lineage).
    georef : Georef
        The image's georeferencing (the CRS of ``lines`` and ``reviewed``).
    width, height : int
        Image size in pixels.
    lines : sequence of shapely (Multi)LineString
        Crack centrelines of the image, in ``georef.crs`` coordinates.
    widths_mm : sequence of float
        Width of each line (mm).
    reviewed : sequence of shapely (Multi)Polygon
        Reviewed areas, in ``georef.crs`` coordinates.
    margin_px : int
        Pixels kept around the reviewed areas (cracks there still shape the distance inside).

    Returns
    -------
    ImageEdits or None
        None when no reviewed area covers a pixel of the image.
    """
    reviewed_px = _to_pixels(reviewed, georef.transform)
    window = _window(reviewed_px, width, height, margin_px)
    if window is None:
        return None
    row0, _, col0, _ = window
    window_transform = georef.transform @ Affine.translation(col0, row0)
    pixel_m = georef.pixel_size_m
    widths_px = np.asarray(
        [w / 1000.0 / pixel_m if pixel_m else math.nan for w in widths_mm], dtype=np.float64
    )
    return ImageEdits(
        survey=survey,
        image=image,
        window=window,
        lines=_to_pixels(lines, window_transform),
        widths_px=widths_px,
        reviewed=_to_pixels(reviewed, window_transform),
        n_kept=n_kept,
        n_drawn=n_drawn,
    )


# --------------------------------------------------------------------------------------------
# Edits of a survey (its GeoPackage layers and images)
# --------------------------------------------------------------------------------------------
@dataclass
class SurveyEdits:
    """What the edits of one processed survey give for training.

    Attributes
    ----------
    survey : str
        Label (the output folder's name).
    images : list of ImageEdits
        One per image with a reviewed area.
    counts : dict
        ``kept``, ``drawn``, ``deleted`` cracks (deleted = processed minus kept, per image),
        ``drawn_unreviewed`` (drawn cracks on no reviewed area), ``no_width`` (cracks that
        took the default width), ``reviewed_areas``.
    warnings : list of str
        One line each, for the caller to emit.
    """

    survey: str
    images: list[ImageEdits] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _crs_text(crs: CRS | None) -> str:
    if crs is None:
        return "pixel units (no CRS)"
    epsg = crs.to_epsg(min_confidence=90)
    return f"EPSG:{epsg}" if epsg else repr(crs.name)


def _same(a: CRS | None, b: CRS | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return same_crs(a, b)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def match_survey_edits(
    survey: str,
    layers: Mapping[str, gpd.GeoDataFrame],
    records: Mapping[str, ImageRecord],
    processed_cracks: Mapping[str, int],
    *,
    source: str = "cracks.gpkg",
    default_width_mm: float = 1.0,
    margin_px: int = 21,
) -> SurveyEdits:
    """Match a survey's edited layers with its images.

    Parameters
    ----------
    survey : str
        Label for messages and the lineage.
    layers : mapping of str to GeoDataFrame
        The spatial layers of cracks.gpkg, each with its CRS (None: pixel units).
    records : mapping of str to ImageRecord
        The survey's images (their georeferencing), by name.
    processed_cracks : mapping of str to int
        Cracks each processed image had (run.json), to count the deleted ones.
    source : str
        The GeoPackage, for messages.
    default_width_mm : float
        Width of a crack without one.
    margin_px : int
        Pixels kept around reviewed areas (at least the clip distance).

    Returns
    -------
    SurveyEdits

    Raises
    ------
    DatasetError
        No ``reviewed`` layer, no polygon in it, no processed image under a reviewed area,
        or a crack layer missing.
    GeoreferenceError
        A crack or reviewed layer in another CRS than its images.
    """
    groups = [m.group(1) for name in layers if (m := re.fullmatch(r"images(_.*)?", name))]
    groups = [g or "" for g in groups]
    reviewed_names = [n for n in layers if re.fullmatch(rf"{REVIEWED_LAYER}(_.*)?", n)]
    if not reviewed_names:
        first = f"cracks{groups[0]}" if groups else "cracks"
        raise DatasetError(
            f"{source}: no {REVIEWED_LAYER!r} layer; in QGIS create a polygon layer named "
            f"{REVIEWED_LAYER} in this GeoPackage, in the CRS of layer {first}, and draw the "
            "areas you checked by eye (samples only come from reviewed areas)"
        )
    reviewed_frames = {
        n: layers[n][~(layers[n].geometry.isna() | layers[n].geometry.is_empty)]
        for n in reviewed_names
    }
    if not any(len(f) for f in reviewed_frames.values()):
        raise DatasetError(
            f"{source}: layer{'s' if len(reviewed_names) > 1 else ''} "
            f"{', '.join(reviewed_names)} {'have' if len(reviewed_names) > 1 else 'has'} no "
            "polygons; draw the areas you checked by eye in it (samples only come from "
            "reviewed areas)"
        )

    out = SurveyEdits(survey)
    counts = dict.fromkeys(
        ("kept", "drawn", "deleted", "drawn_unreviewed", "no_width", "reviewed_areas"), 0
    )
    matched: set[str] = set()
    for suffix in groups:
        images_layer, cracks_name = layers[f"images{suffix}"], f"cracks{suffix}"
        names = [n for n, s in zip(images_layer["image"], images_layer["status"]) if s == "ok"]
        georefs = [records[n].georef for n in names if n in records]
        if not georefs:
            continue
        crs = georefs[0].crs if georefs[0] is not None else None
        if cracks_name not in layers:
            raise DatasetError(
                f"{source}: layer {cracks_name} is missing but {f'images{suffix}'} lists its "
                "images; restore it (process the survey again) instead of deleting the layer"
            )
        cracks = layers[cracks_name]
        if not _same(cracks.crs, crs):
            raise GeoreferenceError(
                f"{source}: layer {cracks_name} is in {_crs_text(cracks.crs)} but its images "
                f"are in {_crs_text(crs)}; save the edits in the layer's own CRS (edit the "
                "layer in place in QGIS; do not save it again in another CRS)"
            )
        reviewed = [f for n, f in reviewed_frames.items() if len(f) and _same(f.crs, crs)]
        matched.update(n for n, f in reviewed_frames.items() if _same(f.crs, crs))
        areas = [g for f in reviewed for g in f.geometry]
        counts["reviewed_areas"] += len(areas)
        _group_edits(
            out,
            counts,
            names,
            records,
            cracks,
            areas,
            processed_cracks,
            source=source,
            layer=cracks_name,
            default_width_mm=default_width_mm,
            margin_px=margin_px,
        )

    stray = [n for n in reviewed_names if n not in matched and len(reviewed_frames[n])]
    if stray:
        frames = {f"cracks{g}": layers[f"cracks{g}"].crs for g in groups if f"cracks{g}" in layers}
        expected = "; ".join(f"{name}: {_crs_text(crs)}" for name, crs in frames.items())
        raise GeoreferenceError(
            f"{source}: layer {stray[0]} is in {_crs_text(reviewed_frames[stray[0]].crs)}, the "
            f"CRS of no crack layer ({expected}); create it again in the CRS of the crack layer "
            "it reviews (QGIS: New GeoPackage Layer, CRS = that layer's) and redraw the areas"
        )
    if not out.images:
        raise DatasetError(
            f"{source}: no reviewed area covers a processed image; draw the reviewed polygons "
            "over the images' footprints (layer images)"
        )
    out.counts = counts
    if counts["drawn_unreviewed"]:
        out.warnings.append(
            f"{source}: {counts['drawn_unreviewed']} drawn crack(s) touch no reviewed area and "
            "are not used; draw a reviewed polygon around them"
        )
    if counts["no_width"]:
        out.warnings.append(
            f"{source}: {counts['no_width']} crack(s) have no width (width_mm or "
            f"width_mean_mm); their crack body is taken {default_width_mm:g} mm wide "
            "(--default-width-mm); type the width into width_mean_mm to use it"
        )
    return out


def _group_edits(
    out: SurveyEdits,
    counts: dict[str, int],
    names: Sequence[str],
    records: Mapping[str, ImageRecord],
    cracks: gpd.GeoDataFrame,
    areas: list[Any],
    processed_cracks: Mapping[str, int],
    *,
    source: str,
    layer: str,
    default_width_mm: float,
    margin_px: int,
) -> None:
    """Add the edits of the images of one CRS group (one crack layer) to ``out``."""
    cracks = cracks[~(cracks.geometry.isna() | cracks.geometry.is_empty)]
    owner = [_text(v) for v in cracks["image"]] if "image" in cracks else [None] * len(cracks)
    drawn = np.array([o is None for o in owner], bool)
    widths, missing = crack_widths_mm(cracks, default_width_mm=default_width_mm)
    geometries = np.asarray(cracks.geometry.to_numpy(), dtype=object)
    area_union = shapely.union_all(np.asarray(areas, dtype=object)) if areas else None
    counts["drawn"] += int(drawn.sum())
    if area_union is not None:
        touching = shapely.intersects(geometries, area_union)
    else:
        touching = np.zeros(len(geometries), bool)
    counts["drawn_unreviewed"] += int((drawn & ~touching).sum())
    used = np.zeros(len(geometries), bool)
    for name in names:
        record = records.get(name)
        if record is None or record.georef is None:
            continue
        georef = record.georef
        assert record.width is not None and record.height is not None
        footprint = shapely.Polygon(
            [
                georef.transform @ c
                for c in (
                    (0, 0),
                    (record.width, 0),
                    (record.width, record.height),
                    (0, record.height),
                )
            ]
        )
        mine = np.array([o == name for o in owner], bool)
        kept = int(mine.sum())
        counts["kept"] += kept
        counts["deleted"] += max(0, int(processed_cracks.get(name, 0)) - kept)
        on_image = mine | (drawn & shapely.intersects(geometries, footprint))
        image_areas = [a for a in areas if shapely.intersects(a, footprint)]
        edits = place_edits(
            out.survey,
            name,
            georef,
            record.width,
            record.height,
            list(geometries[on_image]),
            list(widths[on_image]),
            image_areas,
            margin_px=margin_px,
            n_kept=kept,
            n_drawn=int((drawn & on_image).sum()),
        )
        if edits is not None:
            out.images.append(edits)
            used |= on_image & touching
    counts["no_width"] += int((missing & used).sum())
