"""The ``cracksurvey`` click group: one clear error line, logging on stderr."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from cracksurvey import __version__
from cracksurvey.errors import CrackSurveyError

__all__ = ["bars_disabled", "main", "out_dirs_argument", "tqdm_factory"]

log = logging.getLogger("cracksurvey")


class _Group(click.Group):
    """Turns library errors into one line and exit code 2, unless -v was given."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CrackSurveyError as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cracksurvey")
@click.option(
    "-v", "--verbose", count=True, help="More logging (-vv for debug); tracebacks on errors."
)
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Crack layers from façade and orthophoto images.

    \b
    cracksurvey process SURVEY_DIR      images -> cracks.gpkg, COGs, summary, report
    cracksurvey report OUT_DIR... --out CITY   city-wide report + merged GeoPackage
    cracksurvey train --config RECIPE   train or fine-tune a model on image/mask folders
    cracksurvey finetune OUT_DIR... --run RUN   fine-tune on surveys corrected in QGIS
    cracksurvey evaluate --data DIR     score a model on labelled data
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.captureWarnings(True)


def bars_disabled(quiet: bool) -> bool | None:
    """tqdm's ``disable``: off with --quiet; else shown on a terminal, and on a pipe too when
    CRACKSURVEY_PROGRESS=bars (the QGIS plugin reads them there)."""
    if quiet:
        return True
    return False if os.environ.get("CRACKSURVEY_PROGRESS") == "bars" else None


def tqdm_factory(quiet: bool = False) -> Any:
    from tqdm import tqdm

    def make(total: int, desc: str) -> Any:
        return tqdm(
            total=total,
            desc=desc,
            file=sys.stderr,
            disable=bars_disabled(quiet),
            mininterval=1,
            leave=False,
        )

    return make


#: OUT_DIR...: output folders of `cracksurvey process` (report, finetune).
out_dirs_argument = click.argument(
    "out_dirs",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
