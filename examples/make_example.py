#!/usr/bin/env python
"""Build ``examples/survey/``: a small, real, shippable survey directory.

The README demo (``cracksurvey process examples/survey``) runs on it. It covers the three
georeferencing cases of docs/survey.md with two buildings::

    survey/
      survey.yaml                  survey: {crs: EPSG:32633}
      buildings.geojson            footprints of B01 and B02 (EPSG:32633, building_id)
      images.csv                   building_id, facade_id, gsd_mm and one façade plane
      ATTRIBUTION.md               source patches of every image, datasets, licence, citation
      images/
        B01_map_ortho.tif          case 1: map-georeferenced GeoTIFF (EPSG:32633, 5 mm), inside B01
        B01_south_facade.jpg       case 3: 4480 x 2688 façade placed in the world by images.csv
        B02_east_facade.jpg + .jgw case 2: façade orthoimage in a local metric frame (world file)
        B02_north_facade.jpg       case 2 with only a gsd_mm in images.csv

Every image is a mosaic of real 224 x 224 crack photographs: the TEST split of
``masonry_dais2021`` (Dais et al. 2021, GPL-3.0), never train/val, so the shipped model is not
demoed on its training data. Patches that are neighbours in their source photo (checked by the
continuity of their shared edge) are kept together as clusters, so some cracks run across patch
borders; the mosaic is otherwise a synthetic layout (patches and mirrored copies side by side).
The gsd values are nominal: the source photographs have no known scale.

Deterministic: no random numbers, the layout comes from SHA-256 orderings; re-running it gives
byte-identical files with the same Pillow / GDAL builds (``tests/test_examples.py`` checks this).
Cheap: about 17 Mpx of JPEG encoding, a few seconds on one core.

Usage::

    python examples/make_example.py --data ../shared/data [--out examples/survey]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "survey"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"

DATASET = "masonry_dais2021"
SPLIT = "test"
PATCH_PX = 224
JPEG_QUALITY = 90
CRS = "EPSG:32633"
SEED = "cracksurvey-example-v1"

DATASET_TEXT = {
    "title": "Masonry crack patches (Dais et al., 2021)",
    "repository": "https://github.com/dimitrisdais/crack_detection_CNN_masonry",
    "commit": "83c371c70a27852f22ab3386269c6058a203ef38",
    "files": "dataset/crack_detection_224_images/*.png",
    "licence": "GPL-3.0 (the upstream repository's LICENSE; it covers the repository as a whole)",
    "citation": (
        "D. Dais, İ.E. Bal, E. Smyrou, V. Sarhosis, \"Automatic crack classification and "
        "segmentation on masonry surfaces using convolutional neural networks and transfer "
        "learning\", Automation in Construction 125 (2021) 103606. "
        "https://doi.org/10.1016/j.autcon.2021.103606"
    ),
}

# Patches that are neighbours in one source photo, as {(row, col): patch stem}. Found by the
# mean absolute difference across the shared edge (2-8 grey levels, like adjacent columns inside
# one patch, vs 10-90 for other pairs) and checked by eye: the cracks continue across the edges.
CLUSTERS: dict[str, dict[tuple[int, int], str]] = {
    "a_6": {
        (0, 0): "a_6_27", (1, 0): "a_6_28", (2, 0): "a_6_29", (3, 0): "a_6_30",
        (4, 0): "a_6_31", (5, 0): "a_6_32", (6, 0): "a_6_41", (7, 0): "a_6_42",
        (8, 0): "a_6_43", (8, 1): "a_6_52", (9, 1): "a_6_53",
    },
    "a_12": {(0, 0): "a_12_6", (1, 0): "a_12_7", (2, 0): "a_12_8"},
    "a_14": {(0, 0): "a_14_0", (0, 1): "a_14_2", (1, 1): "a_14_3"},
    "a_19": {(0, 0): "a_19_0", (0, 1): "a_19_1"},
    "a_26": {(0, 0): "a_26_0", (0, 1): "a_26_1"},
}
SINGLES = ("a_130_7", "a_88_0", "b_34_3", "c_30_139", "h_25_154", "h_25_176")

# Two buildings (EPSG:32633, metres): axis-aligned footprints (xmin, ymin, xmax, ymax).
BUILDINGS = {
    "B01": ((500000.0, 5000000.0, 500022.4, 5000014.0), "two-storey brick house"),
    "B02": ((500030.0, 5000002.0, 500042.0, 5000016.0), "brick annex"),
}


@dataclass(frozen=True)
class ImageSpec:
    """One image of the example survey: mosaic size, georeferencing and images.csv row."""

    name: str
    rows: int  # patches down
    cols: int  # patches across
    gsd_mm: float
    building_id: str
    facade_id: str | None
    case: str
    # case 1: lower-left corner of the raster in EPSG:32633
    map_origin: tuple[float, float] | None = None
    # case 2 (world file): façade-frame position (x along the façade, y up) of the lower-left
    # corner, metres
    facade_origin: tuple[float, float] | None = None
    # case 3: base line start (x0, y0), end (x1, y1), base_z; metres, EPSG:32633
    plane: tuple[float, float, float, float, float] | None = None
    mirror: tuple[bool, ...] = (False, True)  # variants used: as is, mirrored left-right

    @property
    def width_px(self) -> int:
        return self.cols * PATCH_PX

    @property
    def height_px(self) -> int:
        return self.rows * PATCH_PX


IMAGES = (
    ImageSpec(
        "B01_map_ortho.tif", rows=5, cols=6, gsd_mm=5.0, building_id="B01", facade_id=None,
        case="1: map-georeferenced GeoTIFF (EPSG:32633 in the file), inside B01's footprint",
        map_origin=(500003.0, 5000004.0),
    ),
    ImageSpec(
        "B01_south_facade.jpg", rows=12, cols=20, gsd_mm=5.0, building_id="B01",
        facade_id="B01-south",
        case="3: façade frame placed in the world by the images.csv façade plane "
        "(B01 south side)",
        # the south façade seen from outside (looking north): left = west end, right = east end
        plane=(500000.0, 5000000.0, 500022.4, 5000000.0, 112.0),
    ),
    ImageSpec(
        "B02_east_facade.jpg", rows=6, cols=8, gsd_mm=4.0, building_id="B02",
        facade_id="B02-east",
        case="2: façade orthoimage in a local metric frame (world file B02_east_facade.jgw)",
        facade_origin=(2.0, 0.5),
    ),
    ImageSpec(
        "B02_north_facade.jpg", rows=3, cols=5, gsd_mm=3.0, building_id="B02",
        facade_id="B02-north",
        case="2: façade image with only a gsd_mm in images.csv (frame origin at its lower left)",
    ),
)


# --- layout ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """A cluster (or a single patch), maybe mirrored left-right; cells relative to its anchor."""

    group: str
    mirrored: bool
    cells: tuple[tuple[int, int, str], ...]  # (row, col, patch stem), sorted row-major


def _piece(group: str, cells: dict[tuple[int, int], str], mirrored: bool) -> Piece:
    width = max(c for _, c in cells) + 1
    placed = sorted(
        (r, (width - 1 - c) if mirrored else c, stem) for (r, c), stem in cells.items()
    )
    r0, c0, _ = placed[0]  # the first cell in row-major order is the anchor
    return Piece(group, mirrored, tuple((r - r0, c - c0, s) for r, c, s in placed))


def _order(seed: str, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def layout(spec: ImageSpec) -> list[list[tuple[str, bool]]]:
    """Fill a rows x cols grid with patches: (stem, mirrored) per cell.

    Cells are filled in row-major order; each empty cell takes the next piece (cluster or single
    patch, as is or mirrored, in a fixed SHA-256 order) that fits in the free cells and does not
    touch a piece of the same source photo. Deterministic, no random numbers.
    """
    groups = {**CLUSTERS, **{stem: {(0, 0): stem} for stem in SINGLES}}
    pieces = sorted(
        (_piece(g, cells, m) for g, cells in groups.items() for m in spec.mirror),
        key=lambda p: _order(SEED + spec.name, f"{p.group}:{p.mirrored}"),
    )
    grid: list[list[tuple[str, bool] | None]] = [[None] * spec.cols for _ in range(spec.rows)]
    owner: list[list[str | None]] = [[None] * spec.cols for _ in range(spec.rows)]
    pointer = 0

    def fits(piece: Piece, row: int, col: int, *, strict: bool) -> bool:
        for dr, dc, _ in piece.cells:
            r, c = row + dr, col + dc
            if not (0 <= r < spec.rows and 0 <= c < spec.cols) or grid[r][c] is not None:
                return False
            if strict:
                for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                    if 0 <= nr < spec.rows and 0 <= nc < spec.cols and owner[nr][nc] == piece.group:
                        return False
        return True

    for row in range(spec.rows):
        for col in range(spec.cols):
            if grid[row][col] is not None:
                continue
            chosen = None
            for strict in (True, False):
                for k in range(len(pieces)):
                    piece = pieces[(pointer + k) % len(pieces)]
                    if fits(piece, row, col, strict=strict):
                        chosen, pointer = piece, (pointer + k + 1) % len(pieces)
                        break
                if chosen is not None:
                    break
            if chosen is None:  # pragma: no cover - a single patch always fits an empty cell
                raise RuntimeError(f"{spec.name}: cannot fill cell {row},{col}")
            for dr, dc, stem in chosen.cells:
                grid[row + dr][col + dc] = (stem, chosen.mirrored)
                owner[row + dr][col + dc] = chosen.group
    return [[cell for cell in line if cell is not None] for line in grid]


# --- sources -----------------------------------------------------------------------------------


def all_stems() -> list[str]:
    return sorted({s for cells in CLUSTERS.values() for s in cells.values()} | set(SINGLES))


def load_patches(data: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read every patch (rows, cols, 3 uint8) and its SHA-256; check it is in the TEST split."""
    root = data / DATASET
    splits_path = root / "splits.csv"
    if not splits_path.is_file():
        raise SystemExit(
            f"{splits_path}: not found; give --data the shared data folder (holding {DATASET}/)"
        )
    with open(splits_path, newline="", encoding="utf-8") as f:
        split_of = {row["file"]: row["split"] for row in csv.DictReader(f)}
    patches, digests = {}, {}
    for stem in all_stems():
        file = f"{stem}.png"
        if split_of.get(file) != SPLIT:
            raise SystemExit(
                f"{DATASET}/{file}: split is {split_of.get(file)!r}, expected {SPLIT!r}; "
                "the example may only use test patches"
            )
        path = root / SPLIT / "images" / file
        raw = path.read_bytes()
        digests[stem] = hashlib.sha256(raw).hexdigest()
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"))
        if array.shape != (PATCH_PX, PATCH_PX, 3):
            raise SystemExit(f"{path}: shape {array.shape}, expected {PATCH_PX}x{PATCH_PX} RGB")
        patches[stem] = array
    return patches, digests


def compose(grid: list[list[tuple[str, bool]]], patches: dict[str, np.ndarray]) -> np.ndarray:
    """The mosaic as (rows, cols, 3) uint8."""
    return np.concatenate(
        [
            np.concatenate([patches[s][:, ::-1] if m else patches[s] for s, m in line], axis=1)
            for line in grid
        ],
        axis=0,
    )


# --- writers -----------------------------------------------------------------------------------

NOTE = (
    "cracksurvey example: synthetic mosaic of real crack photographs from Dais et al. 2021 "
    "(GPL-3.0), see ATTRIBUTION.md"
)


def _num(value: float) -> str:
    """Stable decimal text: at most 6 decimals, no trailing zeros."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def write_jpeg(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels, "RGB").save(
        path, "JPEG", quality=JPEG_QUALITY, optimize=True, subsampling="4:2:0",
        comment=NOTE.encode("utf-8"),
    )


def write_geotiff(path: Path, pixels: np.ndarray, spec: ImageSpec) -> None:
    import rasterio
    from affine import Affine

    assert spec.map_origin is not None
    gsd_m = spec.gsd_mm / 1000.0
    x0, y0 = spec.map_origin
    transform = Affine(gsd_m, 0.0, x0, 0.0, -gsd_m, y0 + spec.height_px * gsd_m)
    profile = dict(
        driver="GTiff", width=spec.width_px, height=spec.height_px, count=3, dtype="uint8",
        crs=CRS, transform=transform, tiled=True, blockxsize=256, blockysize=256,
        compress="JPEG", photometric="YCBCR", jpeg_quality=JPEG_QUALITY, interleave="pixel",
    )
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(pixels, -1, 0))
        dst.update_tags(TIFFTAG_IMAGEDESCRIPTION=NOTE)


def world_file_text(spec: ImageSpec) -> str:
    """ESRI world file (A, D, B, E, C, F; C, F = centre of the top-left pixel), façade frame."""
    assert spec.facade_origin is not None
    gsd_m = spec.gsd_mm / 1000.0
    x0, y0 = spec.facade_origin
    values = (gsd_m, 0.0, 0.0, -gsd_m, x0 + gsd_m / 2, y0 + spec.height_px * gsd_m - gsd_m / 2)
    return "".join(f"{_num(v)}\n" for v in values)


def buildings_geojson() -> str:
    features = []
    for building_id, ((x0, y0, x1, y1), name) in BUILDINGS.items():
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]  # counter-clockwise
        features.append(
            {
                "type": "Feature",
                "properties": {"building_id": building_id, "name": name},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    header = (
        '{"type": "FeatureCollection", "name": "buildings",\n'
        ' "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},\n'
        ' "features": [\n'
    )
    body = ",\n".join("  " + json.dumps(f, ensure_ascii=False) for f in features)
    text = header + body + "\n]}\n"
    json.loads(text)  # well-formed
    return text


def images_csv() -> str:
    header = "image,building_id,facade_id,gsd_mm,base_x0,base_y0,base_x1,base_y1,base_z"
    lines = [header]
    for spec in IMAGES:
        plane = [_num(v) for v in spec.plane] if spec.plane else [""] * 5
        lines.append(
            ",".join([spec.name, spec.building_id, spec.facade_id or "", _num(spec.gsd_mm), *plane])
        )
    return "\n".join(lines) + "\n"


SURVEY_YAML = """\
# cracksurvey example survey (generated by examples/make_example.py).
# Only the keys that differ from configs/process/default.yaml; unknown keys are errors.
survey:
  crs: EPSG:32633   # UTM 33N: the GeoTIFF's CRS and the CRS of the façade plane in images.csv
"""


def attribution_md(
    grids: dict[str, list[list[tuple[str, bool]]]], digests: dict[str, str]
) -> str:
    d = DATASET_TEXT
    out = [
        "# Attribution: where the example images come from",
        "",
        "Generated by `examples/make_example.py`; do not edit by hand.",
        "",
        "Every image in `images/` is a **synthetic mosaic of real crack photographs**: "
        f"{PATCH_PX} x {PATCH_PX} px patches laid out on a grid, some mirrored left-right. "
        "The cracks are real; the layouts, the buildings, the coordinates and the ground sampling "
        "distances are made up for the example (the source photographs have no known scale). "
        "Patches that are neighbours in their source photo are kept side by side, so some "
        "cracks continue across patch borders; elsewhere the seams between patches are "
        "artificial. The pixels were not retouched (JPEG re-encoding at quality "
        f"{JPEG_QUALITY} aside).",
        "",
        "## Dataset and licence",
        "",
        f"- **{d['title']}**, {d['repository']} (commit `{d['commit']}`, files `{d['files']}`), "
        f"as curated in `shared/data/{DATASET}/`. Only patches of its **{SPLIT}** split are used "
        "(never train or validation), so the shipped model is not demoed on its training data.",
        f"- Licence: **{d['licence']}**. The example images are derived from this material and "
        "are distributed under the GPL-3.0, which is compatible with cracksurvey's "
        "GPL-3.0-or-later.",
        f"- Citation (requested by the authors): {d['citation']}",
        "",
        "No other dataset is used. The crack masks of the patches are not shipped.",
        "",
        "## Source patches",
        "",
        f"Files `{DATASET}/{SPLIT}/images/<patch>.png`; SHA-256 of the source files.",
        "",
        "| patch | SHA-256 | " + " | ".join(f"`{name}`" for name in grids) + " |",
        "|---|---|" + "---|" * len(grids),
    ]
    for stem in all_stems():
        counts = []
        for grid in grids.values():
            plain = sum(cell == (stem, False) for line in grid for cell in line)
            mirrored = sum(cell == (stem, True) for line in grid for cell in line)
            counts.append(f"{plain} + {mirrored} m" if mirrored else str(plain))
        out.append(f"| `{stem}.png` | `{digests[stem]}` | " + " | ".join(counts) + " |")
    out += [
        "",
        "Counts are copies as is + mirrored copies (`m`).",
        "",
        "## Layouts",
        "",
        "One line per row of patches, top to bottom; `*` marks a mirrored copy.",
    ]
    specs = {spec.name: spec for spec in IMAGES}
    for name, grid in grids.items():
        spec = specs[name]
        out += [
            "",
            f"### `{name}` ({spec.width_px} x {spec.height_px} px, case {spec.case})",
            "",
            "```",
            *(" ".join(f"{s}{'*' if m else ''}".ljust(10) for s, m in line).rstrip()
              for line in grid),
            "```",
        ]
    return "\n".join(out) + "\n"


# --- main --------------------------------------------------------------------------------------


def build(data: Path, out: Path) -> list[Path]:
    """Write the example survey into ``out``; return the files written."""
    patches, digests = load_patches(data)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def text(path: Path, content: str) -> None:
        path.write_text(content, encoding="utf-8", newline="\n")
        written.append(path)

    grids: dict[str, list[list[tuple[str, bool]]]] = {}
    for spec in IMAGES:
        grid = layout(spec)
        grids[spec.name] = grid
        pixels = compose(grid, patches)
        path = images_dir / spec.name
        if path.suffix == ".tif":
            write_geotiff(path, pixels, spec)
        else:
            write_jpeg(path, pixels)
        written.append(path)
        if spec.facade_origin is not None:
            text(path.with_suffix(".jgw"), world_file_text(spec))
    text(out / "buildings.geojson", buildings_geojson())
    text(out / "images.csv", images_csv())
    text(out / "survey.yaml", SURVEY_YAML)
    text(out / "ATTRIBUTION.md", attribution_md(grids, digests))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA,
        help=f"shared data folder holding {DATASET}/ (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT,
        help="survey directory to write (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    for path in build(args.data, args.out):
        print(f"{path.stat().st_size:>10,d}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
