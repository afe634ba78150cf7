"""Vector output: the ``cracks.gpkg`` GeoPackage, written atomically.

Layers (built by :func:`cracksurvey.process.process_survey`, written here):

==================  =================  ====================================================
``cracks``          MultiLineString    one feature per crack, attributes with units in names
``crack_branches``  LineString         one feature per branch of a crack
``images``          Polygon            footprint and status of every image of the survey
``buildings``       MultiPolygon       per-building summary (geometry = footprint when known)
``cracks_3d``       MultiLineString Z  cracks of façades placed in the world (when any)
==================  =================  ====================================================

**One CRS per layer.** A GeoPackage layer has exactly one CRS, so when the images of a survey
come in several CRSs (a map CRS and façade frames, two façades, images in pixel units) the
``cracks``, ``crack_branches`` and ``images`` layers are written once per CRS group, each named
with the group's suffix (:func:`crs_layer_suffix`): ``cracks_epsg32633``,
``cracks_facade_b1_n`` (the engineering CRS of façade ``B1-N``), ``cracks_px`` (pixel units, no
CRS). A survey whose images share one CRS gets the plain names. Images that failed before
their georeferencing was known are listed, without geometry, in the first ``images`` layer.
``cracks_3d`` is in the projected CRS of the façade planes (survey.crs), so it holds every
placed façade's cracks in one layer; ``buildings`` is in the CRS of the buildings layer (else
survey.crs, else the only projected CRS of the images). run.json lists every layer with its
CRS.

Every layer of a known kind opens styled in QGIS: its default style is stored in the
``layer_styles`` table (:mod:`cracksurvey.io.styles`). The run (package version, model id and
checksum, dates) is recorded as GeoPackage metadata (``gpkg_metadata``).

The first layer is written with the dataset option ``VERSION=1.3`` (pyogrio/GDAL 3.8+ write
GeoPackage 1.4 by default, on which GDAL 3.6 and QGIS 3.22 warn). Empty layers are still
created with their full schema, so a QGIS project always finds them.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from pyproj import CRS

from cracksurvey.georef import facade_id_from_crs, same_crs
from cracksurvey.io.styles import LayerKind, LayerStyle, default_style, write_layer_styles

__all__ = [
    "GPKG_VERSION",
    "CrsGroup",
    "CrsGroups",
    "ImageFeatures",
    "LayerSpec",
    "concat_layer",
    "crack_layers",
    "crs_layer_suffix",
    "empty_layer",
    "read_geopackage",
    "write_geopackage",
]

logger = logging.getLogger(__name__)

#: GeoPackage version written (1.4 makes GDAL 3.6 / QGIS 3.22 warn).
GPKG_VERSION = "1.3"


@dataclass(frozen=True)
class LayerSpec:
    """One layer to write.

    Parameters
    ----------
    name : str
        Layer (table) name.
    frame : geopandas.GeoDataFrame
        Features; may be empty (the layer is created with the frame's columns).
    geometry_type : str
        OGR geometry type name: ``'MultiLineString'``, ``'LineString'``, ``'Polygon'``,
        ``'MultiPolygon'``, ``'MultiLineString Z'`` ...
    crs : pyproj.CRS or None
        The layer CRS (None: no CRS, pixel units).
    description : str
        GeoPackage layer description (shown by QGIS).
    kind : LayerKind, optional
        What the layer holds, which decides its default QGIS style
        (:func:`cracksurvey.io.styles.default_style`); default: from the name.
    """

    name: str
    frame: gpd.GeoDataFrame
    geometry_type: str
    crs: CRS | None
    description: str = ""
    kind: LayerKind | None = None


def crs_layer_suffix(crs: CRS | None) -> str:
    """Layer-name suffix of a CRS group: ``epsg32633``, ``facade_b1_n``, ``px`` (no CRS).

    >>> crs_layer_suffix(CRS.from_epsg(32633)), crs_layer_suffix(None)
    ('epsg32633', 'px')
    >>> from cracksurvey.georef import facade_crs
    >>> crs_layer_suffix(facade_crs("B1-N"))
    'facade_b1_n'
    """
    if crs is None:
        return "px"
    facade = facade_id_from_crs(crs)
    if facade is not None:
        text = f"facade_{facade}"
    else:
        epsg = crs.to_epsg(min_confidence=90)
        text = f"epsg{epsg}" if epsg else crs.name
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_") or "crs"


@dataclass
class CrsGroup:
    """The features of all images that share one CRS (one set of layers).

    ``cracks``, ``branches`` and ``images`` collect per-image frames or rows until the layers
    are written.
    """

    crs: CRS | None
    suffix: str
    cracks: list[gpd.GeoDataFrame] = field(default_factory=list)
    branches: list[gpd.GeoDataFrame] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)


class CrsGroups:
    """CRS groups in order of first appearance; names layers per group.

    >>> groups = CrsGroups()
    >>> a = groups.get(CRS.from_epsg(32633)); b = groups.get(None)
    >>> groups.name("cracks", a), groups.name("cracks", b)
    ('cracks_epsg32633', 'cracks_px')
    """

    def __init__(self) -> None:
        self._groups: list[CrsGroup] = []

    def __iter__(self) -> Iterator[CrsGroup]:
        return iter(self._groups)

    def __len__(self) -> int:
        return len(self._groups)

    def get(self, crs: CRS | None) -> CrsGroup:
        """The group of ``crs`` (equivalent CRSs share a group), created if new."""
        for group in self._groups:
            if crs is None or group.crs is None:
                if crs is None and group.crs is None:
                    return group
            elif same_crs(crs, group.crs):
                return group
        suffix = base = crs_layer_suffix(crs)
        taken = {g.suffix for g in self._groups}
        n = 2
        while suffix in taken:
            suffix, n = f"{base}_{n}", n + 1
        self._groups.append(CrsGroup(crs, suffix))
        return self._groups[-1]

    def name(self, base: str, group: CrsGroup) -> str:
        """``base`` when there is a single group, else ``base_<suffix>``."""
        return base if len(self._groups) == 1 else f"{base}_{group.suffix}"


def empty_layer(columns: Mapping[str, str]) -> gpd.GeoDataFrame:
    """An empty frame with typed columns (``'str'`` becomes object) and a geometry column."""
    data = {
        name: pd.Series([], dtype=object if dtype in ("str", "object") else dtype)
        for name, dtype in columns.items()
    }
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([]), crs=None)


def concat_layer(parts: Sequence[gpd.GeoDataFrame], schema: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Concatenate per-image frames; ``schema`` (an empty frame) when there is none."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return schema
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=None)


def _typed_frame(rows: list[dict[str, Any]], columns: Mapping[str, str]) -> gpd.GeoDataFrame:
    frame = pd.DataFrame(rows, columns=[*columns, "geometry"])
    for column, dtype in columns.items():
        frame[column] = frame[column].astype(object if dtype in ("str", "object") else dtype)
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=None)


def _crs_text(crs: CRS | None) -> str:
    if crs is None:
        return "pixel units, no CRS"
    epsg = crs.to_epsg(min_confidence=90)
    return f"EPSG:{epsg}" if epsg else crs.name


@dataclass(frozen=True)
class ImageFeatures:
    """One image's share of the crack layers.

    Parameters
    ----------
    image_row : dict
        Its row of the ``images`` layer, with a ``geometry`` (footprint, or None).
    crs : pyproj.CRS or None
        CRS of its features (None: pixel units).
    georeferenced : bool
        False for an image that failed before its georeferencing was known: its row goes to
        the first group's ``images`` layer.
    cracks, branches : geopandas.GeoDataFrame, optional
        Its features (no CRS set), when it was processed.
    cracks_3d : geopandas.GeoDataFrame, optional
        3-D cracks of a façade placed in the world, in ``crs_3d``.
    """

    image_row: dict[str, Any]
    crs: CRS | None = None
    georeferenced: bool = True
    cracks: gpd.GeoDataFrame | None = None
    branches: gpd.GeoDataFrame | None = None
    cracks_3d: gpd.GeoDataFrame | None = None
    crs_3d: CRS | None = None


def crack_layers(
    images: Sequence[ImageFeatures],
    *,
    crack_columns: Mapping[str, str],
    branch_columns: Mapping[str, str],
    image_columns: Mapping[str, str],
    fallback_crs: CRS | None = None,
) -> list[LayerSpec]:
    """The ``cracks``, ``crack_branches``, ``images`` (per CRS group) and ``cracks_3d`` layers.

    Parameters
    ----------
    images : sequence of ImageFeatures
        In survey order (the order of the groups).
    crack_columns, branch_columns, image_columns : mapping of str to str
        Column dtypes (``'str'`` for text), for the schema of empty layers and of ``images``.
    fallback_crs : pyproj.CRS, optional
        CRS of the layers when no image is georeferenced (e.g. every image failed).

    Returns
    -------
    list of LayerSpec
        Per group: cracks, crack_branches, images; then the 3-D groups.
    """
    groups, groups_3d = CrsGroups(), CrsGroups()
    for item in images:  # groups in survey order, failed images included
        if item.georeferenced:
            group = groups.get(item.crs)
            if item.cracks is not None:
                group.cracks.append(item.cracks)
            if item.branches is not None:
                group.branches.append(item.branches)
        if item.cracks_3d is not None:
            groups_3d.get(item.crs_3d).cracks.append(item.cracks_3d)
    first = next(iter(groups), None) or groups.get(fallback_crs)
    for item in images:
        (groups.get(item.crs) if item.georeferenced else first).images.append(item.image_row)

    crack_schema, branch_schema = empty_layer(crack_columns), empty_layer(branch_columns)
    specs = []
    for group in groups:
        where = f" ({_crs_text(group.crs)})"
        specs += [
            LayerSpec(
                groups.name("cracks", group),
                concat_layer(group.cracks, crack_schema),
                "MultiLineString",
                group.crs,
                "one feature per crack" + where,
            ),
            LayerSpec(
                groups.name("crack_branches", group),
                concat_layer(group.branches, branch_schema),
                "LineString",
                group.crs,
                "one feature per crack branch" + where,
            ),
            LayerSpec(
                groups.name("images", group),
                _typed_frame(group.images, image_columns),
                "Polygon",
                group.crs,
                "image footprints and processing status" + where,
            ),
        ]
    for group in groups_3d:
        specs.append(
            LayerSpec(
                groups_3d.name("cracks_3d", group),
                concat_layer(group.cracks, crack_schema),
                "MultiLineString Z",
                group.crs,
                f"cracks of façades placed in the world, 3-D ({_crs_text(group.crs)})",
            )
        )
    return specs


def _default_styles(layers: Sequence[LayerSpec]) -> dict[str, LayerStyle]:
    """Layer name to default style, for the layers of a known kind."""
    styles = {
        layer.name: default_style(
            layer.name, layer.frame, kind=layer.kind, pixel_units=layer.crs is None
        )
        for layer in layers
    }
    return {name: style for name, style in styles.items() if style is not None}


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial.gpkg")


def write_geopackage(
    path: str | Path,
    layers: Sequence[LayerSpec],
    *,
    styles: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write layers into one GeoPackage, atomically, with their QGIS styles and run metadata.

    The layers go into a temporary file beside ``path`` which then replaces ``path`` in one
    rename: a reader (QGIS) never sees a half-written GeoPackage, and a failure leaves the
    previous file untouched.

    Parameters
    ----------
    path : str or Path
        The ``.gpkg`` to write (replaced if it exists).
    layers : sequence of LayerSpec
        In the order they are written (the first carries ``VERSION=1.3``). Names must be
        unique.
    styles : bool
        Store each layer's default QGIS style in the ``layer_styles`` table
        (:mod:`cracksurvey.io.styles`); layers of no known kind get none.
    metadata : mapping of str to str, optional
        Dataset metadata (e.g. model id and checksum, version, run date), written by GDAL to
        ``gpkg_metadata`` / ``gpkg_metadata_reference`` (scope ``geopackage``); ``gdalinfo``
        and ``ogrinfo`` list it, QGIS shows it in the layer information.

    Returns
    -------
    Path
    """
    import pyogrio

    path = Path(path)
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"layer names must be unique, got {names}")
    if not layers:
        raise ValueError("no layer to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    # SQLite syncs to disk after every transaction by default (about 0.1 s per layer); the
    # temporary file needs none: it is synced once below, before the rename.
    previous_sync = pyogrio.get_gdal_config_option("OGR_SQLITE_SYNCHRONOUS")
    pyogrio.set_gdal_config_options({"OGR_SQLITE_SYNCHRONOUS": "OFF"})
    try:
        for index, layer in enumerate(layers):
            frame = layer.frame
            if frame.crs is None or layer.crs is None or not frame.crs.equals(layer.crs):
                frame = frame.set_crs(layer.crs, allow_override=True)
            layer_options = {"DESCRIPTION": layer.description} if layer.description else None
            with warnings.catch_warnings():
                # Pixel-unit layers have no CRS on purpose.
                warnings.filterwarnings("ignore", message=".*'crs' was not provided.*")
                pyogrio.write_dataframe(
                    frame,
                    tmp,
                    layer=layer.name,
                    driver="GPKG",
                    geometry_type=layer.geometry_type,
                    dataset_options={"VERSION": GPKG_VERSION} if index == 0 else None,
                    dataset_metadata=dict(metadata) if metadata and index == 0 else None,
                    layer_options=layer_options,
                )
            logger.debug("%s: layer %s, %d features", path.name, layer.name, len(frame))
        if styles:
            write_layer_styles(tmp, _default_styles(layers))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        pyogrio.set_gdal_config_options({"OGR_SQLITE_SYNCHRONOUS": previous_sync})
        tmp.unlink(missing_ok=True)
        for extra in tmp.parent.glob(tmp.name + "-*"):  # SQLite journal files
            extra.unlink(missing_ok=True)
    return path


def read_geopackage(path: str | Path) -> list[LayerSpec]:
    """Read back every spatial layer of a GeoPackage written by :func:`write_geopackage`.

    Non-spatial tables (``layer_styles``) are skipped; ``kind`` is taken from the layer name,
    ``description`` from ``gpkg_contents``.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    list of LayerSpec
        In the file's layer order, frames with their CRS set (None for pixel units).
    """
    import pyogrio

    from cracksurvey.io.styles import layer_kind

    specs = []
    for name, geometry_type in pyogrio.list_layers(path):
        if geometry_type is None:
            continue
        info = pyogrio.read_info(path, layer=name)
        frame = pyogrio.read_dataframe(path, layer=name)
        description = (info.get("layer_metadata") or {}).get("DESCRIPTION", "")
        specs.append(
            LayerSpec(
                str(name),
                frame,
                str(geometry_type),
                frame.crs,
                description,
                kind=layer_kind(str(name)),
            )
        )
    return specs
