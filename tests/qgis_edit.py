"""Edit a processed cracks.gpkg the way an engineer does in QGIS (headless), then print JSON.

Run with the system Python that has Debian's QGIS bindings (not the project venv)::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_edit.py edits.json

``edits.json``::

    {"gpkg": "out/cracks.gpkg", "layer": "cracks",
     "delete": {"crack_id": [1]},                     # features to delete, by attribute
     "add": [{"wkt": "LINESTRING(...)", "attributes": {"width_mean_mm": 5.2}}],
     "reviewed": {"layer": "reviewed", "crs": "layer" or "EPSG:3857",
                  "polygons": ["POLYGON(...)"]}}

Everything goes through QGIS's API as its tools do: an edit session on the crack layer
(deleteFeatures, addFeature with a geometry made multi like the digitizing tool does,
commitChanges), and a new GeoPackage layer created with QgsVectorFileWriter (what the
New GeoPackage Layer dialog writes) in the crack layer's CRS, then edited the same way.
Used by tests/test_field_loop.py; a plain script so the test process never imports QGIS.
"""

from __future__ import annotations

from qgis_app import read_spec, run_script


def _commit(layer) -> None:  # type: ignore[no-untyped-def]
    if not layer.commitChanges():
        raise RuntimeError(f"commit failed: {layer.commitErrors()}")


def _edit_cracks(spec: dict) -> dict:
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer, QgsWkbTypes

    layer = QgsVectorLayer(f"{spec['gpkg']}|layername={spec['layer']}", spec["layer"], "ogr")
    assert layer.isValid(), spec
    layer.startEditing()
    deleted = []
    for column, values in spec.get("delete", {}).items():
        deleted += [f.id() for f in layer.getFeatures() if f[column] in values]
    layer.deleteFeatures(deleted)
    for item in spec.get("add", []):
        feature = QgsFeature(layer.fields())
        geometry = QgsGeometry.fromWkt(item["wkt"])
        if QgsWkbTypes.isMultiType(layer.wkbType()):
            geometry.convertToMultiType()
        feature.setGeometry(geometry)
        for name, value in item.get("attributes", {}).items():
            feature[name] = value
        assert layer.addFeature(feature)
    _commit(layer)
    out = {
        "deleted": len(deleted),
        "added": len(spec.get("add", [])),
        "features": layer.featureCount(),
        "crs": layer.crs().description(),
    }
    del layer
    return out


def _add_reviewed(spec: dict, crack_layer: str) -> dict:
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransformContext,
        QgsFeature,
        QgsField,
        QgsFields,
        QgsGeometry,
        QgsVectorFileWriter,
        QgsVectorLayer,
        QgsWkbTypes,
    )
    from qgis.PyQt.QtCore import QVariant

    gpkg, name = spec["gpkg"], spec["reviewed"]["layer"]
    cracks = QgsVectorLayer(f"{gpkg}|layername={crack_layer}", crack_layer, "ogr")
    wanted = spec["reviewed"].get("crs", "layer")
    crs = cracks.crs() if wanted == "layer" else QgsCoordinateReferenceSystem(wanted)
    del cracks
    fields = QgsFields()
    fields.append(QgsField("note", QVariant.String))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = name
    options.actionOnExistingFile = QgsVectorFileWriter.CreateOrOverwriteLayer
    writer = QgsVectorFileWriter.create(
        gpkg, fields, QgsWkbTypes.Polygon, crs, QgsCoordinateTransformContext(), options
    )
    assert writer.hasError() == QgsVectorFileWriter.NoError, writer.errorMessage()
    del writer
    layer = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
    assert layer.isValid()
    layer.startEditing()
    for wkt in spec["reviewed"].get("polygons", []):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt(wkt))
        feature["note"] = "checked by eye"
        assert layer.addFeature(feature)
    _commit(layer)
    out = {"features": layer.featureCount(), "crs": layer.crs().description()}
    del layer
    return out


def main(argv: list[str]) -> dict:
    from qgis.core import Qgis

    spec = read_spec(argv)
    out = {"qgis": Qgis.version(), "cracks": _edit_cracks(spec)}
    if "reviewed" in spec:
        out["reviewed"] = _add_reviewed(spec, spec["layer"])
    return out


if __name__ == "__main__":
    run_script(main)
