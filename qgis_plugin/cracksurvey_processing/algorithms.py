"""The Processing algorithms: process a survey, report on surveys, fine-tune on corrections.

Each one builds the command line of ``cracksurvey`` from its parameters, runs it
(:mod:`.runner`), reads its ``--json`` answer and loads what it wrote into the project.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsRasterLayer,
    QgsVectorLayer,
)

from .runner import CliError, find_executable, output_folders, run_cli

#: Name of the provider setting that holds the executable's path.
EXECUTABLE_SETTING = "CRACKSURVEY_EXECUTABLE"


def configured_executable() -> str:
    """The executable path set in the Processing options ('' when unset or unavailable)."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:  # the Processing plugin is off: environment variable or PATH
        return ""
    return str(ProcessingConfig.getSetting(EXECUTABLE_SETTING) or "")


def options(*pairs: tuple[str, Any]) -> list[str]:
    """``[flag, value, ...]`` for the pairs whose value is set (not empty, not 0)."""
    return [text for flag, value in pairs if value for text in (flag, str(value))]


def gpkg_layer_names(path: str) -> list[str]:
    """Names of the spatial layers of a GeoPackage, as QGIS lists them."""
    probe = QgsVectorLayer(path, "probe", "ogr")
    names = []
    for sublayer in probe.dataProvider().subLayers() if probe.isValid() else []:
        parts = sublayer.split(QgsVectorLayer.SUBLAYER_SEPARATOR if hasattr(
            QgsVectorLayer, "SUBLAYER_SEPARATOR") else "!!::!!")
        if len(parts) > 3 and parts[3] not in ("NoGeometry", "None"):
            names.append(parts[1])
    del probe
    return names


class _CliAlgorithm(QgsProcessingAlgorithm):
    """Common parts: help, the additional-arguments parameter, running and loading."""

    EXTRA = "EXTRA"
    OVERWRITE = "OVERWRITE"
    OUTPUT = "OUTPUT"
    command = ""
    title = ""
    help_text = ""

    def name(self) -> str:
        return self.command

    def displayName(self) -> str:
        return self.title

    def shortHelpString(self) -> str:
        return self.help_text

    def createInstance(self) -> QgsProcessingAlgorithm:
        return type(self)()

    def _add_common(self) -> None:
        self.addParameter(QgsProcessingParameterBoolean(
            self.OVERWRITE, "Replace the outputs of a previous run in the output folder",
            defaultValue=False))
        extra = QgsProcessingParameterString(
            self.EXTRA, "Additional command-line parameters", defaultValue="", optional=True)
        extra.setFlags(extra.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        extra.setHelp("Passed to the cracksurvey command as they are, e.g. "
                      "--set vectorize.min_crack_length_px=20")
        self.addParameter(extra)

    def _advanced(self, parameter: QgsProcessingParameterDefinition) -> None:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)

    def _common_args(self, parameters: dict, context: QgsProcessingContext) -> list[str]:
        args = ["--overwrite"] if self.parameterAsBool(parameters, self.OVERWRITE, context) else []
        return args + shlex.split(self.parameterAsString(parameters, self.EXTRA, context) or "")

    def _run(self, args: list[str], feedback: Any) -> dict:
        try:
            stdout = run_cli(find_executable(configured_executable()), args, feedback)
        except CliError as exc:
            raise QgsProcessingException(str(exc)) from None
        try:
            return json.loads(stdout) if stdout.strip() else {}
        except ValueError:
            raise QgsProcessingException(f"cracksurvey {self.command}: unreadable answer "
                                         f"{stdout[-300:]!r}") from None

    @staticmethod
    def _load(layer: Any, name: str, context: QgsProcessingContext) -> None:
        if not layer.isValid():
            return
        context.temporaryLayerStore().addMapLayer(layer)
        context.addLayerToLoadOnCompletion(
            layer.id(), QgsProcessingContext.LayerDetails(name, context.project(), name))

    def _load_gpkg(self, gpkg: str, names: list[str], context: QgsProcessingContext) -> None:
        """Load layers bottom to top: buildings, images, branches, cracks."""
        order = ("buildings", "images", "crack_branches", "cracks_3d", "cracks")
        def rank(name: str) -> int:
            return next((i for i, k in enumerate(order) if name.startswith(k)), len(order))
        for name in sorted(names, key=rank):
            self._load(QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr"), name, context)


class ProcessAlgorithm(_CliAlgorithm):
    INPUT = "INPUT"
    WEIGHTS = "WEIGHTS"
    CONFIG = "CONFIG"
    GEOPACKAGE = "GEOPACKAGE"
    REPORT = "REPORT"
    N_CRACKS = "N_CRACKS"
    command = "process"
    title = "Process a survey"
    help_text = (
        "Detects the cracks in every image of a survey folder and writes the GIS layers: "
        "cracks.gpkg (cracks, crack_branches, images, buildings; one set per CRS), COG rasters "
        "of the distance map and mask, summary.csv/json, run.json and report.html. The crack "
        "layers are loaded into the project.<br><br>"
        "<b>Survey folder</b>: images/ (GeoTIFFs; JPEG/PNG with a world file, or a gsd_mm in "
        "images.csv), optional images.csv, buildings.gpkg, survey.yaml.<br>"
        "<b>Output folder</b>: skipped = SURVEY/cracksurvey.<br>"
        "<b>Model weights</b>: a .safetensors file with its .json card (a fine-tuned model's "
        "RUN/model.safetensors); empty = the shipped model.<br><br>"
        "Runs the <i>cracksurvey process</i> command (set its path in Settings &gt; Options "
        "&gt; Processing &gt; Providers &gt; cracksurvey)."
    )

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterFile(
            self.INPUT, "Survey folder", behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterFile(
            self.WEIGHTS, "Model weights", extension="safetensors", optional=True))
        self._advanced(QgsProcessingParameterFile(
            self.CONFIG, "Process config (YAML)", optional=True,
            fileFilter="YAML files (*.yaml *.yml)"))
        self._add_common()
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.OUTPUT, "Output folder", optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputFile(self.GEOPACKAGE, "Crack layers (cracks.gpkg)"))
        self.addOutput(QgsProcessingOutputFile(self.REPORT, "Survey report (report.html)"))
        self.addOutput(QgsProcessingOutputNumber(self.N_CRACKS, "Number of cracks"))

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext,
                         feedback: Any) -> dict:
        args = ["process", self.parameterAsFile(parameters, self.INPUT, context),
                *options(("--out", self.parameterAsFileOutput(parameters, self.OUTPUT, context)),
                         ("--weights", self.parameterAsFile(parameters, self.WEIGHTS, context)),
                         ("--config", self.parameterAsFile(parameters, self.CONFIG, context)))]
        record = self._run(args + self._common_args(parameters, context) + ["--json"], feedback)
        folder = record["out_dir"]
        gpkg = os.path.join(folder, record["outputs"]["geopackage"])
        self._load_gpkg(gpkg, list(record.get("layers", {})), context)
        return {self.OUTPUT: folder, self.GEOPACKAGE: gpkg,
                self.REPORT: os.path.join(folder, record["outputs"]["report"]),
                self.N_CRACKS: record["n_cracks"]}


class ReportAlgorithm(_CliAlgorithm):
    INPUT = "INPUT"
    CRS = "CRS"
    MERGE = "MERGE"
    GEOPACKAGE = "GEOPACKAGE"
    REPORT = "REPORT"
    command = "report"
    title = "City report from processed surveys"
    help_text = (
        "Merges the outputs of processed surveys into one city-wide damage report: "
        "report.html (overview map, districts, buildings ranked across surveys), summary.csv "
        "and summary.json, and cracks.gpkg with the surveys' layers merged (loaded into the "
        "project).<br><br>"
        "<b>Processed surveys</b>: each survey's cracks.gpkg or run.json (or its output "
        "folder).<br>"
        "<b>CRS</b>: projected CRS of the merged layers; empty = the first survey's.<br>"
        "Damage levels are indicative, not a structural assessment."
    )

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUT, "Processed surveys (their cracks.gpkg or run.json)",
            layerType=QgsProcessing.TypeFile))
        self.addParameter(QgsProcessingParameterCrs(self.CRS, "CRS of the merged layers",
                                                    optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            self.MERGE, "Write the merged GeoPackage", defaultValue=True))
        self._add_common()
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "City folder"))
        self.addOutput(QgsProcessingOutputFile(self.REPORT, "City report (report.html)"))
        self.addOutput(QgsProcessingOutputFile(self.GEOPACKAGE, "Merged layers (cracks.gpkg)"))

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext,
                         feedback: Any) -> dict:
        folders = output_folders(self.parameterAsFileList(parameters, self.INPUT, context))
        if not folders:
            raise QgsProcessingException("pick at least one processed survey")
        dest = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        args = ["report", *folders, "--out", dest]
        crs = self.parameterAsCrs(parameters, self.CRS, context)
        if crs.isValid():
            args += ["--crs", crs.authid() or crs.toWkt()]
        if not self.parameterAsBool(parameters, self.MERGE, context):
            args.append("--no-gpkg")
        answer = self._run(args + self._common_args(parameters, context) + ["--json"], feedback)
        gpkg = answer.get("geopackage") or ""
        if gpkg:
            self._load_gpkg(gpkg, gpkg_layer_names(gpkg), context)
        return {self.OUTPUT: dest, self.REPORT: answer["report"], self.GEOPACKAGE: gpkg}


class FinetuneAlgorithm(_CliAlgorithm):
    INPUT = "INPUT"
    WEIGHTS = "WEIGHTS"
    STEPS = "STEPS"
    BATCH_SIZE = "BATCH_SIZE"
    LR = "LR"
    CROP_PX = "CROP_PX"
    DEFAULT_WIDTH_MM = "DEFAULT_WIDTH_MM"
    SEED = "SEED"
    THRESHOLD = "THRESHOLD"
    THRESHOLDS = ("calibrate", "keep")
    MODEL = "MODEL"
    command = "finetune"
    title = "Fine-tune the model on corrected surveys"
    help_text = (
        "Fine-tunes the crack model on processed surveys whose crack layer you corrected, "
        "and writes a new model with its lineage (parent model, surveys, sample counts). "
        "Process the surveys again with it (Model weights = RUN/model.safetensors).<br><br>"
        "Before running, in each survey's cracks.gpkg:<br>"
        "- <b>cracks</b>: delete false cracks; draw missed cracks as lines, with their width "
        "in width_mean_mm (empty: the default width, with a warning);<br>"
        "- <b>reviewed</b>: create a polygon layer named <i>reviewed</i> in the GeoPackage, in "
        "the CRS of its cracks layer, and draw the areas you checked by eye.<br>"
        "Samples only come from reviewed areas: inside them every line is a crack and "
        "everything else is not. Save your edits first. The new model's threshold is the best "
        "on the reviewed areas (advanced: keep the starting model's).<br><br>"
        "The targets training saw are loaded as rasters (RUN/samples): 0 no crack, 1 crack "
        "body, 2 centreline, no data = not reviewed."
    )

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUT, "Corrected surveys (their cracks.gpkg)", layerType=QgsProcessing.TypeFile))
        self.addParameter(QgsProcessingParameterFile(
            self.WEIGHTS, "Start from weights (empty: the shipped model)",
            extension="safetensors", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.STEPS, "Training steps", QgsProcessingParameterNumber.Integer, 200,
            minValue=1))
        self._advanced(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Crops per step", QgsProcessingParameterNumber.Integer, 8,
            minValue=1))
        self._advanced(QgsProcessingParameterNumber(
            self.LR, "Learning rate", QgsProcessingParameterNumber.Double, 1e-4, minValue=0))
        self._advanced(QgsProcessingParameterNumber(
            self.CROP_PX, "Crop size (pixels, multiple of 32; 0: the model's recipe)",
            QgsProcessingParameterNumber.Integer, 0, minValue=0))
        self._advanced(QgsProcessingParameterNumber(
            self.DEFAULT_WIDTH_MM, "Width of cracks drawn without one (mm)",
            QgsProcessingParameterNumber.Double, 1.0, minValue=0.01))
        self._advanced(QgsProcessingParameterNumber(
            self.SEED, "Random seed", QgsProcessingParameterNumber.Integer, 0))
        self._advanced(QgsProcessingParameterEnum(
            self.THRESHOLD, "Threshold of the new model",
            options=["best on the reviewed areas", "the starting model's"], defaultValue=0))
        self._add_common()
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Run folder"))
        self.addOutput(QgsProcessingOutputFile(self.MODEL, "Fine-tuned model (.safetensors)"))

    def prepareAlgorithm(self, parameters: dict, context: QgsProcessingContext,
                         feedback: Any) -> bool:
        """Refuse unsaved edits of the chosen GeoPackages (this runs in the main thread)."""
        folders = output_folders(self.parameterAsFileList(parameters, self.INPUT, context))
        for layer in context.project().mapLayers().values():
            if isinstance(layer, QgsVectorLayer) and layer.isModified():
                source = os.path.dirname(os.path.abspath(layer.source().split("|", 1)[0]))
                if source in folders:
                    raise QgsProcessingException(
                        f"layer {layer.name()} has unsaved edits; save them first "
                        "(Layer > Save Layer Edits)")
        return True

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext,
                         feedback: Any) -> dict:
        folders = output_folders(self.parameterAsFileList(parameters, self.INPUT, context))
        if not folders:
            raise QgsProcessingException("pick at least one corrected survey")
        run = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        number = self.parameterAsInt
        args = ["finetune", *folders, "--run", run,
                "--steps", str(number(parameters, self.STEPS, context)),
                "--batch-size", str(number(parameters, self.BATCH_SIZE, context)),
                "--lr", repr(self.parameterAsDouble(parameters, self.LR, context)),
                "--default-width-mm",
                repr(self.parameterAsDouble(parameters, self.DEFAULT_WIDTH_MM, context)),
                "--seed", str(number(parameters, self.SEED, context)),
                "--threshold",
                self.THRESHOLDS[self.parameterAsEnum(parameters, self.THRESHOLD, context)]]
        args += options(("--crop-px", number(parameters, self.CROP_PX, context)),
                        ("--weights", self.parameterAsFile(parameters, self.WEIGHTS, context)))
        answer = self._run(args + self._common_args(parameters, context) + ["--json"], feedback)
        for path in sorted(glob.glob(os.path.join(run, "samples", "*", "*_target.tif"))):
            name = "target " + os.path.basename(os.path.dirname(path)) + "/" + \
                os.path.basename(path)[: -len("_target.tif")]
            self._load(QgsRasterLayer(path, name, "gdal"), name, context)
        return {self.OUTPUT: run, self.MODEL: answer["model"]}
