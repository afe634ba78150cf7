"""The plugin object QGIS holds: registers the Processing provider."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication

from .provider import CrackSurveyProvider


class CrackSurveyPlugin:
    """A Processing-only plugin (``hasProcessingProvider=yes``): no menus, no toolbar."""

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: CrackSurveyProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS's name
        """Called by QGIS (also by qgis_process) to register the provider."""
        if self.provider is None:
            self.provider = CrackSurveyProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS's name
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
