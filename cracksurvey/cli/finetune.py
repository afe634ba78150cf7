"""The ``finetune`` command: the field loop's retraining on surveys corrected in QGIS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import click

from cracksurvey.cli.group import main, out_dirs_argument, tqdm_factory


def _survey_dir_pairs(items: tuple[str, ...], out_dirs: tuple[Path, ...]) -> dict[str, str]:
    """``--survey-dir OUT_DIR=SURVEY_DIR`` items (a bare SURVEY_DIR with one OUT_DIR)."""
    pairs = {}
    for item in items:
        out, sep, survey = item.rpartition("=")
        if not sep:
            if len(out_dirs) != 1:
                raise click.BadParameter(
                    f"{item!r}: with several OUT_DIRs write OUT_DIR=SURVEY_DIR",
                    param_hint="--survey-dir",
                )
            out, survey = str(out_dirs[0]), item
        pairs[out] = survey
    return pairs


@main.command("finetune")
@out_dirs_argument
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the fine-tuned model, its card, finetune.json and the samples.",
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    default=None,
    show_default="the shipped model",
    help="Weights to start from (.safetensors with its .json model card beside it).",
)
@click.option(
    "--steps", type=click.IntRange(min=1), default=200, show_default=True, help="Optimiser steps."
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Crops per step."
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-4,
    show_default=True,
    help="Adam learning rate (constant).",
)
@click.option(
    "--crack-share",
    type=click.FloatRange(min=0, max=1),
    default=0.5,
    show_default=True,
    help="Share of crops centred on a crack (0: crops anywhere in the reviewed areas, as "
    "they come). Higher finds more cracks and more false ones.",
)
@click.option(
    "--crop-px",
    type=click.IntRange(min=32),
    default=None,
    show_default="the parent recipe's crop_px",
    help="Crop side in pixels (a multiple of 32); crops lie inside reviewed areas.",
)
@click.option(
    "--default-width-mm",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Width of cracks that have none (a warning says how many).",
)
@click.option(
    "--threshold",
    type=click.Choice(["calibrate", "keep"]),
    default="calibrate",
    show_default=True,
    help="Distance threshold of the new model: the best on the reviewed areas after "
    "fine-tuning, or the parent's.",
)
@click.option(
    "--survey-dir",
    "survey_dirs",
    multiple=True,
    metavar="OUT_DIR=SURVEY_DIR",
    help="Where a survey's images are now, if its folder moved after processing "
    "(repeatable; a bare SURVEY_DIR with one OUT_DIR).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the crops and augmentations."
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="CPU threads (0: all).",
)
@click.option("--overwrite", is_flag=True, help="Replace a fine-tuned model in the run folder.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the summary (= finetune.json without the loss history) on stdout.",
)
def finetune(
    out_dirs: tuple[Path, ...],
    run_dir: Path,
    weights: str | None,
    steps: int,
    batch_size: int,
    lr: float,
    crack_share: float,
    crop_px: int | None,
    default_width_mm: float,
    threshold: Literal["calibrate", "keep"],
    survey_dirs: tuple[str, ...],
    seed: int,
    threads: int,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Fine-tune on processed surveys (OUT_DIR...) whose cracks you corrected in QGIS.

    \b
    In each OUT_DIR/cracks.gpkg, before running this:
      cracks     delete false cracks; draw missed cracks as lines (their
                 width in width_mean_mm, or a width_mm column you add)
      reviewed   a polygon layer you create (same CRS as its cracks layer;
                 reviewed_<anything> for several): draw the areas you checked

    \b
    Samples come only from reviewed areas: inside, every line is a crack
    and everything else is not. Starts from --weights (default: the shipped
    model), calibrates the threshold on the reviewed areas (--threshold keep:
    the parent's), and writes into --run:
      model.safetensors, model.json   card with the lineage (parent sha256,
                                      surveys, edit and sample counts)
      finetune.json                   the same, with the loss history
      samples/<survey>/<image>_target.tif   what training saw: 0 no crack,
                                      1 crack body, 2 centreline, 255 unreviewed

    Then: cracksurvey process SURVEY --weights RUN/model.safetensors
    """
    import warnings

    from cracksurvey.errors import CrackSurveyWarning
    from cracksurvey.train.finetune import FINETUNE_JSON, finetune_from_surveys

    def show_warning(message: Any, *args: Any, **kwargs: Any) -> None:
        click.echo("warning: " + " ".join(str(message).split()), err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", CrackSurveyWarning)
        warnings.showwarning = show_warning
        summary = finetune_from_surveys(
            out_dirs,
            run_dir,
            weights=weights,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            crack_share=crack_share,
            crop_px=crop_px,
            default_width_mm=default_width_mm,
            threshold=threshold,
            survey_dirs=_survey_dir_pairs(survey_dirs, out_dirs),
            seed=seed,
            threads=threads,
            overwrite=overwrite,
            progress=tqdm_factory(),
        )
    samples = summary["lineage"]["samples"]
    click.echo(
        f"{steps} steps on {samples['images']} image(s) of {len(out_dirs)} survey(s) "
        f"({samples['reviewed_px']} reviewed px, {samples['centreline_px']} crack px) -> "
        f"{summary['model']} (details: {run_dir / FINETUNE_JSON})",
        err=True,
    )
    if as_json:
        click.echo(
            json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1, default=str)
        )
