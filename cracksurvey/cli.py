"""The ``cracksurvey`` command line: one click group, thin commands.

Heavy imports (torch, dask, geopandas) happen inside the commands so ``--help`` is instant.
Errors are one clear line (traceback with ``-v``); progress bars go to stderr; ``--json`` prints
machine-readable results on stdout.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import CrackSurveyError

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
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug); tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Crack layers from façade and orthophoto images.

    \b
    cracksurvey process SURVEY_DIR      images -> cracks.gpkg, COGs, summary, report
    cracksurvey train --config RECIPE   train or fine-tune a model on image/mask folders
    cracksurvey evaluate --data DIR     score a model on labelled data
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)


def _tqdm_factory(quiet: bool = False) -> Any:
    from tqdm import tqdm

    def make(total: int, desc: str) -> Any:
        return tqdm(total=total, desc=desc, file=sys.stderr, disable=quiet or None, mininterval=1, leave=False)

    return make


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Training recipe YAML (see configs/train/).")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), default=None,
              help="Run directory for checkpoints, history and the final model. [default: runs/<recipe name>]")
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Root of the dataset folders named in the recipe (overrides data_root).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--epochs", type=int, default=None, help="Override the recipe's number of epochs.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def train(config_path: str, run_dir: str | None, data_root: str | None, resume: bool, epochs: int | None, as_json: bool) -> None:
    """Train a TernausNet with the MSE + Dice + TOPO loss on image/mask folders.

    Checkpoints every epoch; selects the best epoch on the recipe's validation metric; at the end
    calibrates the threshold on validation and writes RUN/model.safetensors + model.json, the
    model card that `cracksurvey process --weights` reads.
    """
    from .train.loop import load_config, train as run_training

    overrides: dict[str, Any] = {}
    if data_root:
        overrides["data_root"] = data_root
    if epochs:
        overrides["epochs"] = epochs
    cfg = load_config(config_path, overrides)
    run = Path(run_dir) if run_dir else Path("runs") / cfg.name
    if not resume and (run / "checkpoint.pt").exists():
        raise click.UsageError(f"{run} already holds a run; pass --resume to continue it or choose another --run")
    summary = run_training(cfg, run, resume=resume, progress=_tqdm_factory())
    if as_json:
        click.echo(json.dumps(summary, indent=1, default=str))
    else:
        best = summary["best"]
        click.echo(f"{summary['epochs_done']} epochs in {run}; best epoch {best.get('epoch')} "
                   f"({cfg.selection_metric} {best.get('score', 0):.3f} at threshold {best.get('threshold_px')} px)")
        if "calibration" in summary:
            cal = summary["calibration"]
            click.echo(f"model: {run / 'model.safetensors'} (calibrated threshold {cal['threshold_px']} px)")


@main.command()
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Model .safetensors (with its .json card beside it). [default: the shipped model]")
@click.option("--data", "data_dirs", multiple=True, required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset folder with <split>/images and <split>/masks; repeat for several.")
@click.option("--split", default="test", show_default=True, help="Split folder to score.")
@click.option("--slack-px", default=5.0, show_default=True, help="Relaxed matching tolerance (pixels).")
@click.option("--threshold-px", type=float, default=None, help="Override the card's calibrated threshold.")
@click.option("--variant", type=click.Choice(["wiedemann", "authors"]), default="wiedemann", show_default=True,
              help="Completeness/quality formulas: fixed (B9) or as in the authors' code.")
@click.option("--cpp-patch-px", default=256, show_default=True, help="CPP patch size (pixels).")
@click.option("--cpp-min-area-px", default=50, show_default=True, help="CPP minimum fragment area (pixels).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the full results as JSON on stdout.")
def evaluate(weights: str | None, data_dirs: tuple[str, ...], split: str, slack_px: float, threshold_px: float | None,
             variant: str, cpp_patch_px: int, cpp_min_area_px: int, precision: str, as_json: bool) -> None:
    """Score a model on labelled data: correctness, completeness, quality, F1, CPP, clDice, Betti-0."""
    from .evaluate import evaluate_model, format_table

    results = evaluate_model(
        weights, [Path(d) for d in data_dirs], split=split, slack_px=slack_px, threshold_px=threshold_px,
        variant=variant, cpp_patch_px=cpp_patch_px, cpp_min_area_px=cpp_min_area_px, precision=precision,
        progress=_tqdm_factory(),
    )
    if as_json:
        click.echo(json.dumps(results, indent=1, default=str))
    else:
        click.echo(format_table(results))
