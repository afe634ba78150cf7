"""Open cracksurvey outputs in QGIS (headless) and print what QGIS sees, as JSON.

Run with the system Python that has Debian's QGIS bindings (not the project venv)::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_probe.py cracks.gpkg LAYER... \
        [--raster a.tif ...]

Prints ``{"qgis": version, "vectors": {layer: {...}}, "rasters": {path: {...}}}``. Used by
tests/test_qgis.py; a plain script so that the test process never imports QGIS.
"""

from __future__ import annotations

from qgis_app import run_script


def _crs(crs) -> dict:  # type: ignore[no-untyped-def]
    return {
        "valid": crs.isValid(),
        "authid": crs.authid(),
        "description": crs.description(),
        "wkt": crs.toWkt(),
        "geographic": crs.isGeographic(),
        "map_units": int(crs.mapUnits()),
    }


def _vector(path: str, name: str) -> dict:
    from qgis.core import QgsVectorLayer, QgsWkbTypes

    layer = QgsVectorLayer(f"{path}|layername={name}", name, "ogr")
    info = {"valid": layer.isValid()}
    if not layer.isValid():
        return info
    renderer = layer.renderer()
    info.update(
        crs=_crs(layer.crs()),
        features=layer.featureCount(),
        wkb_type=QgsWkbTypes.displayString(layer.wkbType()),
        has_z=QgsWkbTypes.hasZ(layer.wkbType()),
        renderer=renderer.type() if renderer else None,
        attribute=getattr(renderer, "classAttribute", lambda: None)(),
        legend=[item.label() for item in renderer.legendSymbolItems()] if renderer else [],
        colours=[
            item.symbol().color().name()
            for item in renderer.legendSymbolItems()
            if item.symbol() is not None
        ]
        if renderer
        else [],
        fields=[field.name() for field in layer.fields()],
    )
    return info


def _raster(path: str) -> dict:
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(path, path, "gdal")
    info = {"valid": layer.isValid()}
    if not layer.isValid():
        return info
    provider = layer.dataProvider()
    extent = layer.extent()
    info.update(
        crs=_crs(layer.crs()),
        width=layer.width(),
        height=layer.height(),
        extent=[extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()],
        has_nodata=provider.sourceHasNoDataValue(1),
        nodata=str(provider.sourceNoDataValue(1)),
        overviews=provider.hasPyramids() if hasattr(provider, "hasPyramids") else None,
    )
    return info


def main(argv: list[str]) -> dict:
    from qgis.core import Qgis

    rasters = argv[argv.index("--raster") + 1 :] if "--raster" in argv else []
    vectors = argv[: argv.index("--raster")] if "--raster" in argv else argv
    out = {"qgis": Qgis.version(), "vectors": {}, "rasters": {}}
    if vectors:
        path, names = vectors[0], vectors[1:]
        out["vectors"] = {name: _vector(path, name) for name in names}
    out["rasters"] = {path: _raster(path) for path in rasters}
    return out


if __name__ == "__main__":
    run_script(main)
