"""Georeferencing of an image: map, façade frame, façade placed in the world, or pixel units.

Pure: takes what the image files and images.csv say (:class:`GeorefSources`, numbers, CRS
objects) and decides how pixel coordinates map to x, y. The four kinds (docs/survey.md):

``map``
    GeoTIFF tags, or a world file plus .prj/.aux.xml, in a **projected** CRS. Cracks are written
    in that CRS. A geographic (lat/lon) CRS is rejected with the fix (reproject) because lengths
    in degrees are meaningless and silently reprojecting would resample the image.
``facade``
    A local metric façade frame: x along the façade, y up, metres, origin at the bottom-left
    of the façade (the base line start). From a world file / GeoTIFF transform without a CRS or
    with a local (engineering) CRS, or only a gsd (``gsd_transform``). The CRS is a local
    ENGINEERING CRS built by :func:`facade_crs`, never a fake EPSG code.
``facade_world``
    ``facade`` plus a :class:`FacadePlane` placing the façade frame in a projected CRS;
    :func:`facade_to_world` maps façade (x, y) to 3-D (X, Y, Z).
``pixel``
    Nothing is known: x = col, y = -row, in pixels, ``crs=None``, ``pixel_size_m=None``. The
    caller warns (:class:`~cracksurvey.errors.CrackSurveyWarning`); never silently metres.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
from affine import Affine
from numpy.typing import ArrayLike, NDArray
from pyproj import CRS
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from pyproj.exceptions import CRSError

from cracksurvey.errors import ConfigError, GeoreferenceError

__all__ = [
    "FACADE_CRS_PREFIX",
    "GSD_TOLERANCE",
    "PIXEL_TRANSFORM",
    "FacadePlane",
    "Georef",
    "GeorefKind",
    "GeorefSources",
    "facade_crs",
    "facade_id_from_crs",
    "facade_to_world",
    "gsd_transform",
    "metres_per_unit",
    "parse_world_file",
    "pixel_size",
    "resolve_georef",
    "same_crs",
    "same_transform",
    "world_to_facade",
]

GeorefKind = Literal["map", "facade", "facade_world", "pixel"]

#: x = col, y = -row: pixel units with y up, like every other kind.
PIXEL_TRANSFORM = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
#: Relative disagreement allowed between an images.csv gsd_mm and a raster's pixel size.
GSD_TOLERANCE = 0.01
#: Name prefix of the engineering CRS of a façade frame (ASCII on purpose: GeoTIFF citations).
FACADE_CRS_PREFIX = "cracksurvey facade "


@dataclass(frozen=True)
class FacadePlane:
    """A vertical façade plane in a projected CRS.

    The façade frame's x axis runs along the base line from ``start_xy`` (x = 0, the left edge
    of the façade as seen in the image) to ``end_xy``; its y axis points up from ``base_z``.

    Parameters
    ----------
    start_xy, end_xy : tuple of float
        Base line start and end (X, Y) in ``crs`` units (metres).
    base_z : float
        Elevation of the base line (metres, vertical datum of ``crs`` if compound).
    crs : pyproj.CRS
        Projected CRS (or compound projected + vertical) with metre axes.
    """

    start_xy: tuple[float, float]
    end_xy: tuple[float, float]
    base_z: float
    crs: CRS

    def __post_init__(self) -> None:
        values = (*self.start_xy, *self.end_xy, self.base_z)
        if not all(math.isfinite(v) for v in values):
            raise GeoreferenceError(f"façade plane has a non-finite coordinate: {values}")
        if self.length_m < 0.01:
            raise GeoreferenceError(
                f"façade base line from {self.start_xy} to {self.end_xy} is "
                f"{self.length_m:.3f} m long; give two distinct base corners"
            )
        horizontal = _horizontal(self.crs)
        if not horizontal.is_projected or metres_per_unit(horizontal) != 1.0:
            raise GeoreferenceError(
                f"façade plane CRS {self.crs.name!r} is not a projected CRS in metres; "
                "set survey.crs to one (e.g. the local UTM zone)"
            )

    @property
    def length_m(self) -> float:
        """Length of the base line (metres)."""
        return math.hypot(self.end_xy[0] - self.start_xy[0], self.end_xy[1] - self.start_xy[1])

    @property
    def direction(self) -> tuple[float, float]:
        """Unit vector from start to end (X, Y)."""
        length = self.length_m
        return (
            (self.end_xy[0] - self.start_xy[0]) / length,
            (self.end_xy[1] - self.start_xy[1]) / length,
        )


@dataclass(frozen=True)
class Georef:
    """How pixel (col, row) maps to x, y for one image.

    Parameters
    ----------
    kind : {'map', 'facade', 'facade_world', 'pixel'}
    transform : affine.Affine
        Pixel (col, row) -> (x, y) of the pixel's corner, in ``crs`` units; for ``pixel`` kind
        :data:`PIXEL_TRANSFORM`.
    crs : pyproj.CRS or None
        Projected CRS (map), façade engineering CRS (facade, facade_world), None (pixel).
    pixel_size_m : float or None
        Ground sampling distance in metres (geometric mean of x and y); None in pixel units.
    metres_per_unit : float or None
        Metres per ``crs`` unit (1.0 except for e.g. US-foot map CRSs); None in pixel units.
        Multiply geometric lengths in ``crs`` units by it to get metres.
    plane : FacadePlane or None
        Only for ``facade_world``.
    source : str
        Where the georeferencing came from, for run.json and messages
        (e.g. ``'GeoTIFF tags'``, ``'world file a.pgw + a.prj'``, ``'images.csv gsd_mm'``).
    """

    kind: GeorefKind
    transform: Affine
    crs: CRS | None
    pixel_size_m: float | None
    metres_per_unit: float | None = None
    plane: FacadePlane | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if (self.kind == "facade_world") != (self.plane is not None):
            raise ValueError("a façade plane is given exactly for kind 'facade_world'")
        if (self.kind == "pixel") != (self.crs is None):
            raise ValueError("crs is None exactly for kind 'pixel'")

    @property
    def units(self) -> Literal["m", "px", "crs"]:
        """``'m'`` (façade frames, metre CRSs), ``'px'`` (pixel), ``'crs'`` (other CRS units)."""
        if self.kind == "pixel":
            return "px"
        return "m" if self.metres_per_unit == 1.0 else "crs"


@dataclass(frozen=True)
class GeorefSources:
    """Everything an image's own files say about its georeferencing (filled by the io layer).

    Parameters
    ----------
    width, height : int
        Raster size in pixels.
    raster_transform : Affine or None
        Transform reported by the raster (GeoTIFF tags, GDAL-read world file or .aux.xml);
        None when the raster has none (GDAL's identity).
    raster_crs : pyproj.CRS or None
        CRS embedded in the raster or its .aux.xml.
    world_transform : Affine or None
        Transform parsed from the world file, if any.
    world_file : str or None
        Name of that world file (messages).
    prj_crs : pyproj.CRS or None
        CRS parsed from a ``.prj`` sidecar.
    prj_file : str or None
        Name of that .prj file (messages).
    has_gcps : bool
        The raster is georeferenced by ground control points only.
    """

    width: int
    height: int
    raster_transform: Affine | None = None
    raster_crs: CRS | None = None
    world_transform: Affine | None = None
    world_file: str | None = None
    prj_crs: CRS | None = None
    prj_file: str | None = None
    has_gcps: bool = False


def facade_crs(facade_id: str) -> CRS:
    """Local engineering CRS of a façade frame: x along the façade (east), y up (north), metres.

    The WKT2 round-trips through pyproj, GeoTIFF (rasterio/GDAL keep the name and the unit) and
    GeoPackage (the full WKT is kept), and QGIS shows it as a custom CRS.

    >>> crs = facade_crs("B12-north")
    >>> crs.is_engineering, crs.name, crs.axis_info[0].unit_name
    (True, 'cracksurvey facade B12-north', 'metre')
    >>> facade_id_from_crs(crs)
    'B12-north'
    """
    name = FACADE_CRS_PREFIX + _wkt_text(facade_id)
    wkt = (
        f'ENGCRS["{name}",'
        f'EDATUM["{name}"],'
        "CS[Cartesian,2],"
        'AXIS["x along facade (x)",east,ORDER[1],LENGTHUNIT["metre",1]],'
        'AXIS["y up (y)",north,ORDER[2],LENGTHUNIT["metre",1]]]'
    )
    return CRS.from_wkt(wkt)


def facade_id_from_crs(crs: CRS | None) -> str | None:
    """The façade id of a CRS made by :func:`facade_crs` (also after a GeoTIFF round trip)."""
    if crs is None or not crs.is_engineering or not crs.name.startswith(FACADE_CRS_PREFIX):
        return None
    return crs.name[len(FACADE_CRS_PREFIX) :]


def _wkt_text(text: str) -> str:
    """Text safe inside a WKT quoted string: no control characters, quotes doubled."""
    text = re.sub(r"[\x00-\x1f\x7f]", " ", str(text)).strip()
    return text.replace('"', '""')


def gsd_transform(gsd_mm: float, height: int) -> Affine:
    """Façade-frame transform from a gsd alone: y up, bottom-left of the image at (0, 0).

    >>> gsd_transform(2.0, 100) @ (0, 100)
    (0.0, 0.0)
    >>> gsd_transform(2.0, 100) @ (50, 0)
    (0.1, 0.2)
    """
    gsd_m = gsd_mm / 1000.0
    return Affine(gsd_m, 0.0, 0.0, 0.0, -gsd_m, height * gsd_m)


def parse_world_file(text: str) -> Affine:
    """Parse an ESRI world file (A, D, B, E, C, F; C, F = centre of the top-left pixel).

    Returns the corner-based affine transform (GDAL/rasterio convention).

    >>> parse_world_file("0.5\\n0\\n0\\n-0.5\\n100.25\\n200.75\\n")
    Affine(0.5, 0.0, 100.0,
           0.0, -0.5, 201.0)
    """
    tokens = text.split()
    if len(tokens) != 6:
        raise ValueError(f"expected 6 numbers, found {len(tokens)}")
    try:
        a, d, b, e, c, f = (float(t) for t in tokens)
    except ValueError:
        raise ValueError(f"not numbers: {' '.join(tokens)}") from None
    if not all(math.isfinite(v) for v in (a, b, c, d, e, f)) or a * e - b * d == 0:
        raise ValueError("degenerate or non-finite transform")
    return Affine(a, b, c - 0.5 * a - 0.5 * b, d, e, f - 0.5 * d - 0.5 * e)


def pixel_size(transform: Affine) -> float:
    """Pixel side in transform units: geometric mean of the x and y sizes (rotation-safe)."""
    return math.sqrt(abs(transform.a * transform.e - transform.b * transform.d))


def _horizontal(crs: CRS) -> CRS:
    """The horizontal part of a compound CRS, else the CRS itself."""
    if crs.is_compound and crs.sub_crs_list:
        return crs.sub_crs_list[0]
    return crs


def metres_per_unit(crs: CRS) -> float:
    """Metres per unit of the first axis of (the horizontal part of) ``crs``.

    Raises
    ------
    GeoreferenceError
        The axis unit is not a length (e.g. degrees) or is unknown.
    """
    axes = _horizontal(crs).axis_info
    if not axes or axes[0].unit_name in ("degree", "radian", "grad", "unknown", ""):
        raise GeoreferenceError(f"CRS {crs.name!r} has no linear axis unit")
    return float(axes[0].unit_conversion_factor)


def same_crs(a: CRS, b: CRS) -> bool:
    """True if two CRSs are equivalent (axis order and naming differences ignored)."""
    if a.equals(b, ignore_axis_order=True):
        return True
    if a.is_engineering and b.is_engineering:
        return a.name == b.name
    epsg_a, epsg_b = a.to_epsg(min_confidence=90), b.to_epsg(min_confidence=90)
    return epsg_a is not None and epsg_a == epsg_b


def facade_to_world(
    x: ArrayLike, y: ArrayLike, plane: FacadePlane
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Map façade-frame coordinates to 3-D coordinates in the plane's CRS.

    Parameters
    ----------
    x : array_like, metres
        Distance along the base line from its start.
    y : array_like, metres
        Height above the base line.
    plane : FacadePlane

    Returns
    -------
    X, Y, Z : ndarray of float64
        Coordinates in ``plane.crs`` (metres), broadcast shape of ``x`` and ``y``.

    Examples
    --------
    >>> plane = FacadePlane((100.0, 200.0), (103.0, 204.0), 50.0, CRS.from_epsg(32633))
    >>> [float(v) for v in facade_to_world(5.0, 2.0, plane)]
    [103.0, 204.0, 52.0]
    """
    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    ux, uy = plane.direction
    return plane.start_xy[0] + x * ux, plane.start_xy[1] + x * uy, plane.base_z + y


def world_to_facade(
    X: ArrayLike, Y: ArrayLike, Z: ArrayLike, plane: FacadePlane
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Inverse of :func:`facade_to_world`, projecting onto the plane.

    Returns
    -------
    x, y : ndarray of float64, metres
        Façade-frame coordinates of the projection of (X, Y, Z) onto the plane.
    offset : ndarray of float64, metres
        Signed horizontal distance of the point from the plane (positive to the right of the
        base line direction); 0 for points on the plane.
    """
    X, Y, Z = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (X, Y, Z)))
    ux, uy = plane.direction
    dx, dy = X - plane.start_xy[0], Y - plane.start_xy[1]
    return dx * ux + dy * uy, Z - plane.base_z, dx * uy - dy * ux


def _utm_hint(transform: Affine, width: int, height: int) -> str:
    """' (e.g. EPSG:32633)' for the image centre, or '' if it is not a plausible lon/lat."""
    lon, lat = transform @ (width / 2, height / 2)
    if not (-180 <= lon <= 180 and -80 <= lat <= 84):
        return ""
    try:
        infos = query_utm_crs_info(
            datum_name="WGS 84",
            area_of_interest=AreaOfInterest(lon, lat, lon, lat),
        )
    except (CRSError, ValueError):  # pragma: no cover - depends on the PROJ database
        return ""
    return f" (e.g. EPSG:{infos[0].code})" if infos else ""


def _crs_label(crs: CRS) -> str:
    epsg = crs.to_epsg(min_confidence=90)
    return f"EPSG:{epsg}" if epsg else repr(crs.name)


def resolve_georef(
    sources: GeorefSources,
    *,
    name: str,
    facade_id: str | None = None,
    gsd_mm: float | None = None,
    plane: FacadePlane | None = None,
    survey_crs: CRS | None = None,
    survey_gsd_mm: float | None = None,
) -> Georef:
    """Decide the georeferencing of one image from its files, images.csv and survey.yaml.

    Rules, in order:

    1. Transform: the raster's own (GeoTIFF tags, .aux.xml, GDAL-read world file), else the
       world file. CRS: the raster's own, else the .prj.
    2. A geographic CRS, GCPs only, or a CRS without linear units: :class:`GeoreferenceError`
       (the image cannot be processed as is; the message says how to fix it).
    3. A projected CRS: ``map``. A transform with an engineering CRS: ``facade`` (units scaled
       to metres).
    4. A transform without any CRS: ``map`` in ``survey_crs`` if it is set and the image is not
       declared a façade (no ``facade_id``, no ``plane``); otherwise ``facade``.
    5. No transform: ``facade`` from ``gsd_mm`` (images.csv), else from ``survey_gsd_mm``, else
       ``pixel``.
    6. A ``plane`` turns ``facade`` into ``facade_world``.

    Parameters
    ----------
    sources : GeorefSources
        What the image's files say.
    name : str
        Image name for messages (e.g. ``'images/a.tif'``).
    facade_id : str, optional
        images.csv facade_id; names the façade CRS (default: ``name`` without extension).
    gsd_mm : float, optional
        images.csv gsd_mm (mm per pixel).
    plane : FacadePlane, optional
        images.csv façade plane.
    survey_crs : pyproj.CRS, optional
        survey.yaml ``survey.crs``.
    survey_gsd_mm : float, optional
        survey.yaml ``survey.gsd_mm``.

    Returns
    -------
    Georef

    Raises
    ------
    ConfigError
        A contradiction between the files, images.csv and survey.yaml (fix before any work).
    GeoreferenceError
        Unusable georeferencing of this image only.
    """
    transform, transform_source = _pick_transform(sources, name)
    crs, crs_source = _pick_crs(sources, name)
    label = facade_id if facade_id else _stem(name)

    if sources.has_gcps and transform is None:
        raise GeoreferenceError(
            f"{name}: georeferenced by ground control points only; rectify it first "
            "(gdalwarp -t_srs <projected CRS> in out.tif)"
        )
    if crs is not None and transform is None:
        raise GeoreferenceError(
            f"{name}: has a CRS ({_crs_label(crs)}) but no transform; add a world file or "
            "re-export it as a GeoTIFF"
        )

    if crs is None and transform is not None and survey_crs is not None:
        if facade_id is None and plane is None:
            crs, crs_source = survey_crs, "survey.yaml crs"

    source = " + ".join(s for s in (transform_source, crs_source) if s)

    if crs is not None and transform is not None:
        horizontal = _horizontal(crs)
        if horizontal.is_geographic:
            raise GeoreferenceError(
                f"{name}: CRS {_crs_label(crs)} is geographic (degrees), lengths would be "
                "meaningless; reproject it to a projected CRS in metres"
                f"{_utm_hint(transform, sources.width, sources.height)}, "
                "e.g. gdalwarp -t_srs EPSG:XXXXX in.tif out.tif"
            )
        if horizontal.is_projected:
            factor = _linear_factor(crs, name)
            if survey_crs is not None and not same_crs(crs, survey_crs):
                raise ConfigError(
                    f"{name}: raster CRS {_crs_label(crs)} contradicts survey.yaml crs "
                    f"{_crs_label(survey_crs)}; fix survey.yaml or reproject the image"
                )
            if plane is not None:
                raise ConfigError(
                    f"{name}: images.csv gives a façade plane but the image is "
                    f"map-georeferenced in {_crs_label(crs)}; remove the plane columns for it "
                    "or give a façade orthoimage"
                )
            size_m = pixel_size(transform) * factor
            _check_gsd(name, gsd_mm, size_m)
            return Georef(
                kind="map",
                transform=transform,
                crs=horizontal,
                pixel_size_m=size_m,
                metres_per_unit=factor,
                source=source,
            )
        if not horizontal.is_engineering:
            raise GeoreferenceError(
                f"{name}: CRS {_crs_label(crs)} ({crs.type_name}) is neither projected nor a "
                "local façade frame; reproject it to a projected CRS in metres"
            )
        # a local engineering frame: scale its unit to metres
        factor = _linear_factor(crs, name)
        transform = Affine.scale(factor) @ transform
        own_id = facade_id_from_crs(crs)
        if facade_id is None and own_id is not None:
            label = own_id

    if transform is not None:
        size_m = pixel_size(transform)
        _check_gsd(name, gsd_mm, size_m)
        return _facade(transform, size_m, label, plane, source or transform_source)

    if gsd_mm is not None:
        return _facade(
            gsd_transform(gsd_mm, sources.height), gsd_mm / 1000, label, plane, "images.csv gsd_mm"
        )
    if plane is not None:
        raise ConfigError(
            f"{name}: images.csv gives a façade plane but the image has no scale; "
            "add its gsd_mm to images.csv or a world file"
        )
    if survey_gsd_mm is not None:
        transform = gsd_transform(survey_gsd_mm, sources.height)
        return _facade(transform, survey_gsd_mm / 1000, label, None, "survey.yaml gsd_mm")
    return Georef(
        kind="pixel", transform=PIXEL_TRANSFORM, crs=None, pixel_size_m=None, source="none"
    )


def _facade(
    transform: Affine, size_m: float, label: str, plane: FacadePlane | None, source: str
) -> Georef:
    if plane is not None:
        source += " + images.csv façade plane"
    return Georef(
        kind="facade_world" if plane is not None else "facade",
        transform=transform,
        crs=facade_crs(label),
        pixel_size_m=size_m,
        metres_per_unit=1.0,
        plane=plane,
        source=source,
    )


def _stem(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def _linear_factor(crs: CRS, name: str) -> float:
    try:
        return metres_per_unit(crs)
    except GeoreferenceError as exc:
        raise GeoreferenceError(f"{name}: {exc}; reproject it to a CRS in metres") from None


def _check_gsd(name: str, gsd_mm: float | None, size_m: float) -> None:
    if gsd_mm is None:
        return
    if abs(size_m * 1000 - gsd_mm) > GSD_TOLERANCE * gsd_mm:
        raise ConfigError(
            f"{name}: images.csv gsd_mm={gsd_mm:g} disagrees with the raster's pixel size "
            f"{size_m * 1000:.4g} mm by more than {GSD_TOLERANCE:.0%}; "
            "fix images.csv or leave its gsd_mm empty"
        )


def same_transform(a: Affine, b: Affine) -> bool:
    """Equal up to rounding: scale terms to 1e-6, offsets to 1e-3 of a pixel."""
    size = max(pixel_size(a), pixel_size(b))
    scales = (a.a - b.a, a.b - b.b, a.d - b.d, a.e - b.e)
    return all(abs(v) <= 1e-6 * size for v in scales) and all(
        abs(v) <= 1e-3 * size for v in (a.c - b.c, a.f - b.f)
    )


def _pick_transform(sources: GeorefSources, name: str) -> tuple[Affine | None, str]:
    raster, world = sources.raster_transform, sources.world_transform
    if raster is not None and world is not None and not same_transform(raster, world):
        # The image's own files disagree: that image fails alone (the others still run).
        raise GeoreferenceError(
            f"{name}: world file {sources.world_file} ({tuple(world)[:6]}) contradicts the "
            f"raster's own transform ({tuple(raster)[:6]}); delete one of them"
        )
    if raster is not None:
        if world is not None:
            return raster, f"raster transform = world file {sources.world_file}"
        return raster, "raster transform"
    if world is not None:
        return world, f"world file {sources.world_file}"
    return None, ""


def _pick_crs(sources: GeorefSources, name: str) -> tuple[CRS | None, str]:
    raster, prj = sources.raster_crs, sources.prj_crs
    if raster is not None and prj is not None and not same_crs(raster, prj):
        raise GeoreferenceError(
            f"{name}: {sources.prj_file} ({_crs_label(prj)}) contradicts the raster's own CRS "
            f"({_crs_label(raster)}); delete one of them"
        )
    if raster is not None:
        return raster, "raster CRS"
    if prj is not None:
        return prj, f"{sources.prj_file}"
    return None, ""
