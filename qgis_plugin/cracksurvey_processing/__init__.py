"""QGIS plugin: the cracksurvey Processing provider (process, report, fine-tune).

Install by copying this folder into the QGIS profile's ``python/plugins`` folder (or pointing
``QGIS_PLUGINPATH`` at its parent) and enabling it in Plugins > Manage and Install Plugins.
"""


def classFactory(iface):  # noqa: N802 - the name QGIS calls
    """QGIS's entry point."""
    from .plugin import CrackSurveyPlugin

    return CrackSurveyPlugin(iface)
