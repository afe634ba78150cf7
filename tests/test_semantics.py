"""Façade semantics: when an image is classified, and that the shipped network's classes hold on
held-out street photos with pixel labels (``../shared/data/negatives/labelmefacade``).

The data test is marked ``slow``: `make test` runs it; `make test-fast` skips it.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from cracksurvey.semantics import BACKGROUND, NODATA, OPENING, WALL, applies

REPO = Path(__file__).resolve().parents[1]
LABELMEFACADE = REPO.parent / "shared" / "data" / "negatives" / "labelmefacade"
# Held-out photos (validation source sets, never trained on), each about 683 x 512 px.
VAL_PHOTOS = (
    "static_boston_street_april__p1010089",
    "static_outdoor_street_city_gerona_spain__IMG_2818",
    "static_outdoor_urban_city_street_boston__IMG_6383",
)


@pytest.mark.parametrize(
    ("height", "width", "gsd_mm", "expected"),
    [
        (2160, 3840, 3.0, True),  # a 4K street façade, 11.5 m wide
        (512, 683, 30.0, True),  # a small whole-street photo: 20 m wide
        (512, 683, None, False),  # the same photo without a GSD: could be a close-up
        (384, 544, None, False),  # a close-up of a cracked wall (deepcrack's size)
        (1024, 1400, None, True),
        (2000, 3000, 1.0, False),  # 3 m of wall: a close-up however many pixels
        (200, 200, 30.0, False),  # too few pixels for the network
    ],
)
def test_the_semantics_run_on_images_that_show_a_facade(height, width, gsd_mm, expected) -> None:
    assert applies(height, width, gsd_mm) is expected


def _label_classes(name: str) -> np.ndarray:
    from PIL import Image

    from cracksurvey.train.negatives import LABELMEFACADE_CLASSES

    rgb = np.asarray(Image.open(LABELMEFACADE / "labels" / f"{name}.png").convert("RGB"))
    classes = np.full(rgb.shape[:2], 255, np.uint8)
    for colour, k in LABELMEFACADE_CLASSES.items():
        classes[(rgb == colour).all(axis=-1)] = k
    return classes


@pytest.mark.slow
@pytest.mark.skipif(
    not (LABELMEFACADE / "labels").is_dir(),
    reason="../shared/data/negatives/labelmefacade (street photos with pixel labels) is absent",
)
def test_small_street_photos_are_classified_at_a_known_gsd_and_agree_with_their_labels(
    tmp_path: Path,
) -> None:
    import pandas as pd
    import pyogrio
    import rasterio

    from cracksurvey.process import process_survey

    survey = tmp_path / "survey"
    (survey / "images").mkdir(parents=True)
    rows = []
    for name in VAL_PHOTOS:
        shutil.copy(LABELMEFACADE / "images" / f"{name}.jpg", survey / "images")
        rows.append({"image": f"{name}.jpg", "building_id": name, "gsd_mm": 30})
    with open(survey / "images.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "building_id", "gsd_mm"])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "out"
    process_survey(survey, out_dir=out, synchronous=True, overwrite=True)
    gpkg = out / "cracks.gpkg"
    layers = [name for name, _ in pyogrio.list_layers(gpkg)]

    def table(prefix: str) -> pd.DataFrame:  # one layer per façade frame: attributes only
        return pd.concat(
            pyogrio.read_dataframe(gpkg, layer=n, read_geometry=False)
            for n in layers
            if n.startswith(prefix) and n != "cracks_3d"
        )

    images = table("images_")
    assert (images["semantics"] == "model").all()
    agree = []
    for name in VAL_PHOTOS:
        row = images[images["building_id"] == name].iloc[0]
        with rasterio.open(out / row["semantics_raster"]) as ds:  # relative to the run
            predicted = ds.read(1)
        truth = _label_classes(name)
        assert predicted.shape == truth.shape  # one cell per pixel at 30 mm/px
        assert set(np.unique(predicted)) <= {WALL, OPENING, BACKGROUND, NODATA}
        labelled = truth != 255
        agree.append(float((predicted == truth)[labelled].mean()))
        # wall area is what the semantics call wall, not the whole photo
        assert 0 < row["wall_px"] < row["valid_px"]
        assert row["wall_px"] == pytest.approx(int((predicted == WALL).sum()), rel=0.01)
    # Measured (2026-12-01, AMD EPYC Zen 5, bf16): 0.89, 0.90, 0.83 on these three (0.81 on
    # average over the 45 held-out photos, 0.53 at worst, a night scene; 0.86 of their wall
    # pixels called wall). Calling everything wall scores 0.67, 0.61, 0.57 here.
    assert np.mean(agree) >= 0.78, agree
    assert set(table("cracks_")["surface"]) <= {"wall"}
