"""The process tool: a survey directory in, crack layers, rasters and summaries out.

:func:`process_survey` composes the stages (docs/design.md)::

    discover_survey ─► predict: Engine.run_image (tiles ─► model ─► COGs + sparse skeleton)
      ─► measure: vectorize_skeleton ─► CPP from the mask COG ─► building join
      ─► summarize_buildings ─► cracks.gpkg, summary.csv/json, report.html, run.json

- :mod:`~cracksurvey.process.run`: the tool itself (inputs, model, output folder, failures);
- :mod:`~cracksurvey.process.images`: one image through the predict and measure stages, each
  cached apart, and the building join;
- :mod:`~cracksurvey.process.outputs`: the layers, summaries, report and run.json;
- :mod:`~cracksurvey.process.outcome`: what a run reports per image and overall.
"""

from cracksurvey.process.outcome import ImageOutcome, RunSummary
from cracksurvey.process.run import process_survey
from cracksurvey.progress import ProgressCallback, ProgressEvent

__all__ = ["ImageOutcome", "ProgressCallback", "ProgressEvent", "RunSummary", "process_survey"]
