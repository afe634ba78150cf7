"""The cracksurvey Processing provider and its setting (the executable's path)."""

from __future__ import annotations

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import (
    EXECUTABLE_SETTING,
    FinetuneAlgorithm,
    ProcessAlgorithm,
    ReportAlgorithm,
)


class CrackSurveyProvider(QgsProcessingProvider):
    """Provider ``cracksurvey``: algorithms cracksurvey:process, :report, :finetune."""

    def id(self) -> str:
        return "cracksurvey"

    def name(self) -> str:
        return "cracksurvey"

    def longName(self) -> str:
        return "cracksurvey: crack layers from façade images"

    def icon(self) -> QIcon:
        return QIcon(os.path.join(os.path.dirname(__file__), "icon.svg"))

    def load(self) -> bool:
        """Add the executable setting to Settings > Options > Processing > Providers."""
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting
        except ImportError:  # the Processing plugin is off
            pass
        else:
            ProcessingConfig.addSetting(Setting(
                self.name(), EXECUTABLE_SETTING,
                "cracksurvey executable (empty: $CRACKSURVEY_EXECUTABLE, else the PATH)", "",
                valuetype=Setting.FILE))
            ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        try:
            from processing.core.ProcessingConfig import ProcessingConfig
        except ImportError:
            return
        ProcessingConfig.removeSetting(EXECUTABLE_SETTING)

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS's name
        for algorithm in (ProcessAlgorithm(), ReportAlgorithm(), FinetuneAlgorithm()):
            self.addAlgorithm(algorithm)
