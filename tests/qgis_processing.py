"""Install the cracksurvey plugin into QGIS (headless) and run its Processing algorithms.

Run with the system Python that has Debian's QGIS bindings (not the project venv)::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_processing.py runs.json

``runs.json``: ``{"plugins": "qgis_plugin", "runs": [{"algorithm": "cracksurvey:process",
"parameters": {...}}, ...]}``; a run with ``"unsaved_edit": "a.gpkg|layername=cracks"`` first
loads that layer into the project and deletes a feature without saving. The plugin folder is found and started the way QGIS starts a
Processing plugin (``qgis.utils``: plugin paths, metadata, ``startProcessingPlugin``), then
each algorithm runs through ``processing.run``. Prints one JSON line: per run its results, the
progress values and log lines the feedback got and the layers it asked to load; and, per
algorithm, its parameters and help. Used by tests/test_qgis_plugin.py.
"""

from __future__ import annotations

import sys

from qgis_app import read_spec, run_script


def _feedback():  # type: ignore[no-untyped-def]
    from qgis.core import QgsProcessingFeedback

    class Recording(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.progress: list[float] = []
            self.log: list[str] = []
            self.progressChanged.connect(self.progress.append)

        def pushInfo(self, info: str) -> None:  # noqa: N802
            self.log.append(info)

        def pushWarning(self, warning: str) -> None:  # noqa: N802
            self.log.append(warning)

        def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802,N803
            self.log.append(error)

    return Recording()


def _describe(algorithm) -> dict:  # type: ignore[no-untyped-def]
    from qgis.core import QgsProcessingParameterDefinition

    return {
        "name": algorithm.displayName(),
        "help": algorithm.shortHelpString(),
        "parameters": {
            p.name(): {
                "description": p.description(),
                "type": p.type(),
                "optional": bool(p.flags() & QgsProcessingParameterDefinition.FlagOptional),
                "advanced": bool(p.flags() & QgsProcessingParameterDefinition.FlagAdvanced),
            }
            for p in algorithm.parameterDefinitions()
        },
        "outputs": [o.name() for o in algorithm.outputDefinitions()],
    }


def main(argv: list[str]) -> dict:
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject

    spec = read_spec(argv)
    sys.path.append("/usr/share/qgis/python/plugins")
    import processing  # Debian's Processing plugin
    import qgis.utils
    from processing.core.Processing import Processing

    Processing.initialize()
    qgis.utils.plugin_paths = [spec["plugins"]]
    sys.path.insert(0, spec["plugins"])
    qgis.utils.updateAvailablePlugins()
    assert "cracksurvey_processing" in qgis.utils.available_plugins, qgis.utils.available_plugins
    assert qgis.utils.loadPlugin("cracksurvey_processing")
    assert qgis.utils.startProcessingPlugin("cracksurvey_processing")
    provider = QgsApplication.processingRegistry().providerById("cracksurvey")
    out: dict = {
        "provider": provider.longName(),
        "algorithms": {a.id(): _describe(a) for a in provider.algorithms()},
        "runs": [],
    }
    for run in spec["runs"]:
        feedback = _feedback()
        context = QgsProcessingContext()
        context.setProject(QgsProject.instance())
        dirty = None
        if run.get("unsaved_edit"):  # a layer with an edit not saved yet
            from qgis.core import QgsVectorLayer

            dirty = QgsVectorLayer(run["unsaved_edit"], "cracks", "ogr")
            QgsProject.instance().addMapLayer(dirty)
            dirty.startEditing()
            dirty.deleteFeature(next(dirty.getFeatures()).id())
        try:
            results = processing.run(
                run["algorithm"], run["parameters"], feedback=feedback, context=context
            )
            error = None
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results, error = {}, str(exc)
        out["runs"].append(
            {
                "results": {k: str(v) for k, v in results.items()},
                "error": error,
                "progress": feedback.progress,
                "log": feedback.log,
                "load": sorted(d.name for d in context.layersToLoadOnCompletion().values()),
            }
        )
        del context
        if dirty is not None:
            dirty.rollBack()
            QgsProject.instance().removeMapLayer(dirty.id())
            del dirty
    qgis.utils.unloadPlugin("cracksurvey_processing")
    return out


if __name__ == "__main__":
    run_script(main)
