"""Building join and building summaries (pure).

**Join.** :func:`join_cracks_to_footprints` gives each crack of a map-georeferenced image the
building whose footprint it overlaps most; :func:`join_points_to_footprints` does the same for
points (CPP patch centres); :func:`building_geometries` gives each building its footprint, or
the union of its map images' footprints. Façade images get their building from images.csv.

**Summary.** :func:`summarize_buildings` computes per-building crack statistics.

One row per building, one source of truth: the same DataFrame becomes the ``buildings`` layer of
``cracks.gpkg`` (with the footprint as geometry), ``summary.csv`` and ``summary.json``.

Inputs are plain tables assembled by :func:`cracksurvey.process.process_survey`:

``cracks``
    One row per crack: ``building_id``, ``length_m``, ``width_max_mm``, ``orientation_deg``
    (the ``cracks`` layer attributes; lengths NaN for images in pixel units).
``branches``
    One row per branch: ``building_id``, ``length_m``, ``width_mean_mm``.
``coverage``
    What each image contributes to a building: ``image``, ``building_id``, ``area_m2`` (imaged
    area, NaN when unknown), ``cpp_fragments`` (sum over the patches of the number of crack
    fragments, docs/method.md), ``cpp_patches`` (number of counted patches).
``images``
    One row per image of the survey: ``image``, ``building_id`` (images.csv, may be None),
    ``status`` ('ok' or 'error').

Orientation bins (``share_*``), from the crack's length-weighted mean axial direction
``orientation_deg`` in [0, 180), 0 = +x, counter-clockwise (:func:`orientation_class`):

- ``horizontal``: within 22.5 degrees of the x axis, ``[0, 22.5) or [157.5, 180)``;
- ``vertical``: within 22.5 degrees of the y axis, ``[67.5, 112.5)``;
- ``diagonal``: the rest, ``[22.5, 67.5) or [112.5, 157.5)``.

A crack counts with its whole length in the bin of its mean direction (a branched or curved
crack is not split between bins).

In a façade frame x runs along the façade and y up, so the bins are the usual ones of masonry
damage (shear cracks are diagonal). In a map CRS they are relative to the map grid (vertical =
north-south) and carry no structural meaning.

**Damage level.** With a :class:`~cracksurvey.damage.DamageScale`, three more columns give an
indicative damage level (``damage_level``, ``damage_label``, ``damage_basis``,
:func:`cracksurvey.damage.assess_damage`): indicative, not a structural assessment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import shapely
from numpy.typing import ArrayLike, NDArray

from cracksurvey.damage import DAMAGE_COLUMNS, DamageScale, assess_damage
from cracksurvey.measure.continuity import continuity_stats

if TYPE_CHECKING:
    import geopandas as gpd
    from pyproj import CRS

__all__ = [
    "ORIENTATION_TOLERANCE_DEG",
    "SUMMARY_COLUMNS",
    "OrientationClass",
    "building_geometries",
    "footprints_in",
    "join_cracks_to_footprints",
    "join_points_to_footprints",
    "orientation_class",
    "summarize_buildings",
    "weighted_quantile",
]

OrientationClass = Literal["horizontal", "vertical", "diagonal"]

#: Half-width of the horizontal and vertical orientation bins (degrees).
ORIENTATION_TOLERANCE_DEG = 22.5

#: Columns of the building summary (after ``building_id``) and what they mean, with units.
SUMMARY_COLUMNS: dict[str, str] = {
    "n_cracks": "number of cracks (connected crack polylines) assigned to the building",
    "total_length_m": "sum of crack lengths, metres (images in pixel units excluded)",
    "longest_crack_m": "length of the longest crack, metres",
    "mean_crack_length_m": "total_length_m / number of cracks with a metric length, metres",
    "width_max_mm": "largest measured crack width, millimetres",
    "width_p95_mm": "length-weighted 95th percentile of the branches' mean widths, millimetres",
    "imaged_area_m2": "area of the building covered by its images, square metres",
    "crack_density_m_per_m2": "total_length_m / imaged_area_m2, metres per square metre",
    "share_vertical": "share of crack length within 22.5 degrees of vertical (y axis), 0-1",
    "share_horizontal": "share of crack length within 22.5 degrees of horizontal (x axis), 0-1",
    "share_diagonal": "share of crack length in the diagonal bins, 0-1",
    "cpp_mean": "mean number of crack fragments per counted patch (CPP, docs/method.md)",
    "cpp_patches": "number of patches the CPP mean is taken over",
    "fragments_per_m": "number of cracks / total_length_m, per metre",
    "largest_crack_share": "longest_crack_m / total_length_m, 0-1",
    "evidence_cracks": "cracks at or above the damage scale's confidence threshold (evidence)",
    "evidence_length_m": "total length of the evidence cracks, metres",
    "evidence_width_p95_mm": "length-weighted 95th percentile of the mean widths of the "
    "evidence cracks' branches, millimetres",
    "evidence_density_m_per_m2": "evidence_length_m / imaged_area_m2, metres per square metre",
    "detection_limit_mm": "narrowest crack the model finds in the building's finest image "
    "(its detection limit in pixels times the image's GSD), millimetres",
    "n_images": "images that were processed and cover the building",
    "n_images_failed": "images of the building (images.csv) that failed",
    **DAMAGE_COLUMNS,
}
#: Integer columns of the summary (the damage level is a nullable integer).
_INT_COLUMNS = ("n_cracks", "evidence_cracks", "cpp_patches", "n_images", "n_images_failed")


# --------------------------------------------------------------------------------------------
# Building join
# --------------------------------------------------------------------------------------------
def footprints_in(footprints: gpd.GeoDataFrame | None, crs: CRS | None) -> gpd.GeoDataFrame | None:
    """The buildings layer in ``crs`` (reprojected if needed); None if there is nothing to join.

    A buildings layer without a CRS is taken to be in ``crs``.
    """
    if footprints is None or len(footprints) == 0 or crs is None:
        return None
    if footprints.crs is None:
        return footprints.set_crs(crs)
    if not footprints.crs.equals(crs):
        return footprints.to_crs(crs)
    return footprints


def join_cracks_to_footprints(
    cracks: gpd.GeoSeries, footprints: gpd.GeoDataFrame | None
) -> NDArray[np.object_]:
    """Building of each crack: the footprint it overlaps most (None: no overlap).

    Parameters
    ----------
    cracks : geopandas.GeoSeries of shape (n,)
        Crack geometries, in the CRS of ``footprints``.
    footprints : geopandas.GeoDataFrame or None
        With a ``building_id`` column.

    Returns
    -------
    ndarray of shape (n,), object
        ``building_id`` or None. A crack crossing two footprints goes to the one holding the
        longer part of it.
    """
    out = np.full(len(cracks), None, dtype=object)
    if footprints is None or len(cracks) == 0:
        return out
    geoms = np.asarray(cracks.values)
    fp_geoms = np.asarray(footprints.geometry.values)
    fp_ids = footprints["building_id"].to_numpy(dtype=object)
    crack_idx, fp_idx = shapely.STRtree(fp_geoms).query(geoms, predicate="intersects")
    if crack_idx.size == 0:
        return out
    overlap = shapely.length(shapely.intersection(geoms[crack_idx], fp_geoms[fp_idx]))
    order = np.lexsort((-overlap, crack_idx))  # per crack, the largest overlap first
    crack_idx, fp_idx = crack_idx[order], fp_idx[order]
    first = np.ones(crack_idx.size, dtype=bool)
    first[1:] = crack_idx[1:] != crack_idx[:-1]
    out[crack_idx[first]] = fp_ids[fp_idx[first]]
    return out


def join_points_to_footprints(
    xy: ArrayLike, footprints: gpd.GeoDataFrame | None
) -> NDArray[np.object_]:
    """Building whose footprint contains each point (None: none; overlaps: the first).

    Parameters
    ----------
    xy : array_like of shape (n, 2)
        Points in the CRS of ``footprints``.
    footprints : geopandas.GeoDataFrame or None
        With a ``building_id`` column.
    """
    points = shapely.points(np.asarray(xy, dtype=np.float64).reshape(-1, 2))
    out = np.full(len(points), None, dtype=object)
    if footprints is None or len(points) == 0:
        return out
    fp_geoms = np.asarray(footprints.geometry.values)
    point_idx, fp_idx = shapely.STRtree(fp_geoms).query(points, predicate="within")
    order = np.lexsort((-fp_idx, point_idx))  # per point the first footprint is written last
    ids = footprints["building_id"].to_numpy(dtype=object)
    out[point_idx[order]] = ids[fp_idx[order]]
    return out


def building_geometries(
    building_ids: Sequence[str],
    footprints: gpd.GeoDataFrame | None,
    image_footprints: Mapping[str, Sequence[Any]] | None = None,
) -> list[Any]:
    """Geometry of each building for the ``buildings`` layer, as MultiPolygon or None.

    Parameters
    ----------
    building_ids : sequence of str
    footprints : geopandas.GeoDataFrame or None
        The buildings layer (several features of one ``building_id`` are merged).
    image_footprints : mapping of str to sequence of Polygon, optional
        Footprints of each building's map images, in the CRS of ``footprints``; their union is
        used for buildings without a footprint.

    Returns
    -------
    list of shapely.MultiPolygon or None
    """
    known: dict[str, Any] = {}
    if footprints is not None and len(footprints):
        for building_id, part in footprints.groupby("building_id"):
            known[str(building_id)] = shapely.union_all(part.geometry.values)
    for building_id, polygons in (image_footprints or {}).items():
        if building_id not in known and len(polygons):
            known[building_id] = shapely.union_all(list(polygons))
    return [_as_multipolygon(known.get(b)) for b in building_ids]


def _as_multipolygon(geometry: Any) -> Any:
    if geometry is None or geometry.is_empty:
        return None
    if isinstance(geometry, shapely.MultiPolygon):
        return geometry
    if isinstance(geometry, shapely.Polygon):
        return shapely.MultiPolygon([geometry])
    parts = [g for g in getattr(geometry, "geoms", []) if isinstance(g, shapely.Polygon)]
    return shapely.MultiPolygon(parts) if parts else None


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------
def orientation_class(orientation_deg: ArrayLike) -> NDArray[np.object_]:
    """Orientation bin of each crack direction (see the module docstring).

    Parameters
    ----------
    orientation_deg : array_like of shape (n,), degrees
        Axial directions in [0, 180), 0 = +x, counter-clockwise. NaN gives None.

    Returns
    -------
    ndarray of shape (n,), object
        'horizontal', 'vertical', 'diagonal' or None.

    Examples
    --------
    >>> orientation_class([0.0, 10.0, 45.0, 90.0, 170.0]).tolist()
    ['horizontal', 'horizontal', 'diagonal', 'vertical', 'horizontal']
    """
    angle = np.mod(np.asarray(orientation_deg, dtype=np.float64).reshape(-1), 180.0)
    tol = ORIENTATION_TOLERANCE_DEG
    out = np.full(angle.shape, "diagonal", dtype=object)
    out[(angle < tol) | (angle >= 180.0 - tol)] = "horizontal"
    out[(angle >= 90.0 - tol) & (angle < 90.0 + tol)] = "vertical"
    out[np.isnan(angle)] = None
    return out


def weighted_quantile(values: ArrayLike, weights: ArrayLike, q: float) -> float:
    """Smallest value whose cumulative weight reaches ``q`` of the total (NaN values ignored).

    >>> weighted_quantile([1.0, 2.0, 10.0], [9.0, 0.5, 0.5], 0.95)
    2.0
    >>> weighted_quantile([], [], 0.5)
    nan
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    ok = np.isfinite(v) & np.isfinite(w) & (w > 0)
    v, w = v[ok], w[ok]
    if v.size == 0:
        return float("nan")
    order = np.argsort(v, kind="stable")
    cumulative = np.cumsum(w[order])
    index = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
    return float(v[order][min(index, v.size - 1)])


def _nan_max(values: pd.Series) -> float:
    finite = values[np.isfinite(values.to_numpy(dtype=np.float64))]
    return float(finite.max()) if len(finite) else float("nan")


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 and np.isfinite(num) and np.isfinite(den) else float("nan")


def _confident(frame: pd.DataFrame, min_confidence: float) -> NDArray[np.bool_]:
    if "confidence" not in frame or min_confidence <= 0:
        return np.ones(len(frame), dtype=bool)
    return frame["confidence"].to_numpy(dtype=np.float64) >= min_confidence


def _evidence(cracks: pd.DataFrame, scale: DamageScale | None) -> NDArray[np.bool_]:
    """Cracks that count as evidence for a damage level (the scale's rules)."""
    if scale is None:
        return np.ones(len(cracks), dtype=bool)
    keep = _confident(cracks, scale.min_confidence)
    if scale.straight_line_min_length_m is not None and "straightness" in cracks:
        straight = cracks["straightness"].to_numpy(dtype=np.float64)
        length = cracks["length_m"].to_numpy(dtype=np.float64)
        keep &= ~(
            (straight >= scale.straight_line_min_straightness)
            & (length >= scale.straight_line_min_length_m)
        )
    return keep


def _one_building(
    cracks: pd.DataFrame,
    branches: pd.DataFrame,
    coverage: pd.DataFrame,
    n_failed: int,
    *,
    scale: DamageScale | None = None,
    detection_limit_mm: float = float("nan"),
) -> dict[str, float | int]:
    lengths = cracks["length_m"].to_numpy(dtype=np.float64)
    metric = np.isfinite(lengths)
    stats = continuity_stats(lengths[metric])
    n_images = int(coverage["image"].nunique())
    # Lengths are known when some crack has a metric length, or when the building was imaged
    # and has no crack (0 m). A building without images, or only with cracks in pixel units,
    # has unknown (NaN) length statistics.
    has_length = bool(metric.any()) or (len(cracks) == 0 and n_images > 0)
    total = stats["total_length_m"] if has_length else float("nan")

    classes = orientation_class(cracks["orientation_deg"].to_numpy(dtype=np.float64))
    shares = {}
    for name in ("vertical", "horizontal", "diagonal"):
        in_class = float(lengths[metric & (classes == name)].sum())
        shares[f"share_{name}"] = _ratio(in_class, float(lengths[metric].sum()))

    area = coverage["area_m2"].to_numpy(dtype=np.float64)
    area_known = area[np.isfinite(area)]
    imaged_area = float(area_known.sum()) if area_known.size else float("nan")
    patches = int(coverage["cpp_patches"].sum())
    fragments = float(coverage["cpp_fragments"].sum())

    def if_length(value: float) -> float:
        return float(value) if has_length else float("nan")

    evidence = _evidence(cracks, scale)
    evidence_length = float(lengths[metric & evidence].sum()) if has_length else float("nan")
    evidence_branches = branches
    if (
        "crack_id" in branches
        and "crack_id" in cracks
        and "image" in branches
        and "image" in cracks
    ):
        kept = set(zip(cracks["image"][evidence], cracks["crack_id"][evidence], strict=True))
        in_evidence = np.array(
            [(i, c) in kept for i, c in zip(branches["image"], branches["crack_id"], strict=True)],
            dtype=bool,
        )
        evidence_branches = branches.loc[in_evidence]
    elif scale is not None:
        evidence_branches = branches[_confident(branches, scale.min_confidence)]

    return {
        "n_cracks": len(cracks),
        "total_length_m": total,
        "longest_crack_m": if_length(lengths[metric].max() if metric.any() else 0.0),
        "mean_crack_length_m": if_length(stats["mean_length_m"]),
        "width_max_mm": _nan_max(cracks["width_max_mm"]),
        "width_p95_mm": weighted_quantile(branches["width_mean_mm"], branches["length_m"], 0.95),
        "imaged_area_m2": imaged_area,
        "crack_density_m_per_m2": _ratio(total, imaged_area),
        **shares,
        "cpp_mean": fragments / patches if patches else float("nan"),
        "cpp_patches": patches,
        "fragments_per_m": if_length(stats["fragments_per_m"]),
        "largest_crack_share": if_length(stats["largest_share"]),
        "evidence_cracks": int(evidence.sum()),
        "evidence_length_m": evidence_length,
        "evidence_width_p95_mm": weighted_quantile(
            evidence_branches["width_mean_mm"], evidence_branches["length_m"], 0.95
        ),
        "evidence_density_m_per_m2": _ratio(evidence_length, imaged_area),
        "detection_limit_mm": detection_limit_mm,
        "n_images": n_images,
        "n_images_failed": n_failed,
    }


def _require(frame: pd.DataFrame, name: str, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}")


def summarize_buildings(
    cracks: pd.DataFrame,
    branches: pd.DataFrame,
    coverage: pd.DataFrame,
    images: pd.DataFrame,
    *,
    building_ids: Iterable[str] = (),
    damage_scale: DamageScale | None = None,
) -> pd.DataFrame:
    """Per-building crack statistics and indicative damage level.

    Parameters
    ----------
    cracks, branches, coverage, images : pandas.DataFrame
        See the module docstring for the columns. Rows with ``building_id`` None are not
        assigned to a building and are ignored.
    building_ids : iterable of str
        Buildings to report even without images or cracks (e.g. every footprint of the
        buildings layer); their statistics are 0 or NaN.
    damage_scale : DamageScale, optional
        The scale of the damage columns; None leaves them empty (not assessed).

    Returns
    -------
    pandas.DataFrame
        One row per building, sorted by ``building_id``; columns ``building_id`` then
        :data:`SUMMARY_COLUMNS`. Undefined values are NaN, never a 0 pretending to be a
        measurement.

    Notes
    -----
    - An imaged building without cracks has ``total_length_m`` 0 and density 0; a building
      without any processed image has NaN statistics (unknown, not undamaged).
    - Lengths and widths of images in pixel units are NaN and ignored by the metric columns;
      their cracks still count in ``n_cracks``. A building whose cracks are all in pixel
      units has NaN length statistics.
    - ``crack_density_m_per_m2`` is NaN when no imaged area is known.
    """
    _require(cracks, "cracks", ("building_id", "length_m", "width_max_mm", "orientation_deg"))
    _require(branches, "branches", ("building_id", "length_m", "width_mean_mm"))
    _require(
        coverage, "coverage", ("image", "building_id", "area_m2", "cpp_fragments", "cpp_patches")
    )
    _require(images, "images", ("image", "building_id", "status"))

    ids: set[str] = {str(b) for b in building_ids}
    for frame in (cracks, coverage, images):
        ids.update(str(b) for b in frame["building_id"].dropna())

    def rows_of(frame: pd.DataFrame, building: str) -> pd.DataFrame:
        return frame[frame["building_id"].astype(object) == building]

    failed = images[images["status"] == "error"]
    image_limit: dict[str, float] = {}
    if "detection_limit_mm" in images:
        image_limit = dict(zip(images["image"], images["detection_limit_mm"].astype(float)))
    records = []
    for building in sorted(ids):
        n_failed = int(rows_of(failed, building)["image"].nunique())
        limits = np.array(
            [image_limit.get(i, np.nan) for i in rows_of(coverage, building)["image"]]
        )
        limits = limits[np.isfinite(limits)]
        limit = float(limits.min()) if limits.size else float("nan")
        records.append(
            {
                "building_id": building,
                **_one_building(
                    rows_of(cracks, building),
                    rows_of(branches, building),
                    rows_of(coverage, building),
                    n_failed,
                    scale=damage_scale,
                    detection_limit_mm=limit,
                ),
            }
        )
    measured = [c for c in SUMMARY_COLUMNS if c not in DAMAGE_COLUMNS]
    frame = pd.DataFrame.from_records(records, columns=["building_id", *measured])
    float_columns = [c for c in measured if c not in _INT_COLUMNS]
    frame[list(_INT_COLUMNS)] = frame[list(_INT_COLUMNS)].astype(np.int64)
    frame[float_columns] = frame[float_columns].astype(np.float64)
    frame["building_id"] = frame["building_id"].astype(object)
    if damage_scale is not None:
        damage = assess_damage(frame, damage_scale)
    else:
        damage = pd.DataFrame(
            {
                "damage_level": pd.Series(pd.NA, index=frame.index, dtype="Int64"),
                "damage_label": None,
                "damage_basis": None,
            },
            index=frame.index,
        )
    return pd.concat(
        [frame, damage.astype({"damage_label": object, "damage_basis": object})], axis=1
    )
