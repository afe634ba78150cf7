"""Read a survey directory: config layers, images.csv, buildings layer, image headers.

Everything here opens files and hands plain values to the pure modules
(:mod:`cracksurvey.config`, :mod:`cracksurvey.survey`, :mod:`cracksurvey.georef`). A file that
belongs to one image and cannot be read (corrupt or truncated raster, unparsable world file or
.prj) does not raise: its :class:`~cracksurvey.survey.ImageFile` carries a one-line ``error``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rasterio
import yaml
from affine import Affine
from pyproj import CRS
from pyproj.exceptions import CRSError
from rasterio.enums import Interleaving
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from cracksurvey.config import ProcessConfig, build_config
from cracksurvey.errors import ConfigError
from cracksurvey.georef import GeorefSources, parse_world_file, same_transform
from cracksurvey.io.raster import read_header
from cracksurvey.progress import ProgressCallback, ProgressEvent
from cracksurvey.survey import (
    BUILDINGS_FILES,
    IMAGE_SUFFIXES,
    WORLD_FILE_SUFFIXES,
    ImageFile,
    ImageRow,
    Survey,
    build_records,
    check_building_ids,
    id_text,
    parse_images_csv,
)

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "PRESET_DIR",
    "config_layers",
    "discover_survey",
    "hash_file",
    "list_image_files",
    "load_process_config",
    "read_buildings",
    "read_images_csv",
    "read_image_file",
    "read_yaml",
]

logger = logging.getLogger(__name__)

#: Named presets: ``configs/process/<name>.yaml`` of the source tree.
PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "process"
_CHUNK_BYTES = 1 << 20
_JPEG_TAIL_BYTES = 64 * 1024
_MAX_TIFF_BLOCKS_CHECKED = 200_000


def hash_file(path: str | Path, *, chunk_bytes: int = _CHUNK_BYTES) -> str:
    """SHA-256 hex digest of a file, streamed in ``chunk_bytes`` chunks (flat memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; an empty file gives None.

    Raises
    ------
    ConfigError
        The file cannot be read or is not valid YAML (message has the line and column).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML ({problem})") from None


def _preset_path(preset: str | Path) -> Path:
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"preset {str(preset)!r}: no such file")
        return path
    candidate = PRESET_DIR / f"{preset}.yaml"
    if not candidate.is_file():
        names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise ConfigError(
            f"unknown preset {str(preset)!r}; available presets: {', '.join(names) or 'none'} "
            f"(in {PRESET_DIR}), or give a path to a YAML file"
        )
    return candidate


def config_layers(
    *,
    preset: str | Path | None = None,
    survey_yaml: str | Path | None = None,
    config_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[tuple[str, Any]]:
    """Read the config layers in precedence order (lowest first).

    Parameters
    ----------
    preset : str or Path, optional
        A preset name (``configs/process/<name>.yaml``) or a YAML path.
    survey_yaml : Path, optional
        The survey directory's survey.yaml.
    config_path : Path, optional
        ``--config FILE``.
    overrides : mapping, optional
        CLI values as a nested layer (see :func:`cracksurvey.config.parse_set_options`).

    Returns
    -------
    list of (source, mapping)
        Input of :func:`cracksurvey.config.build_config`.
    """
    layers: list[tuple[str, Any]] = []
    if preset is not None:
        path = _preset_path(preset)
        layers.append((str(path), read_yaml(path)))
    for layer_path in (survey_yaml, config_path):
        if layer_path is not None:
            layers.append((str(layer_path), read_yaml(layer_path)))
    if overrides:
        layers.append(("command line", overrides))
    return layers


def load_process_config(
    *,
    preset: str | Path | None = None,
    survey_yaml: str | Path | None = None,
    config_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ProcessConfig:
    """Effective config: defaults < preset < survey.yaml < --config < CLI overrides."""
    return build_config(
        config_layers(
            preset=preset, survey_yaml=survey_yaml, config_path=config_path, overrides=overrides
        )
    )


def read_images_csv(path: str | Path) -> dict[str, ImageRow]:
    """Read and validate images.csv (UTF-8, BOM tolerated; ``,`` ``;`` or tab delimited)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as CSV UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ConfigError(
            f"{path}: empty; the first line must be a header such as "
            "image,building_id,facade_id,gsd_mm"
        )
    first = lines[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader)
        rows = [(reader.line_num, fields) for fields in reader]
    except csv.Error as exc:
        raise ConfigError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from None
    return parse_images_csv(header, rows, source=str(path))


def find_buildings_file(root: Path) -> Path | None:
    """The buildings layer of a survey directory, or None. Two of them is an error."""
    found = [root / name for name in BUILDINGS_FILES if (root / name).is_file()]
    if len(found) > 1:
        raise ConfigError(
            f"{root}: several buildings layers ({', '.join(p.name for p in found)}); keep one"
        )
    return found[0] if found else None


def read_buildings(path: str | Path, *, default_crs: str | None = None) -> gpd.GeoDataFrame:
    """Read a buildings layer and check its ``building_id`` column.

    A GeoPackage with several layers must have one named ``buildings``. ``building_id`` is
    returned as text; a layer without a CRS gets ``default_crs`` (survey.crs) if given.
    """
    import geopandas as gpd
    import pyogrio

    path = Path(path)
    layer = None
    try:
        layers = [name for name, _ in pyogrio.list_layers(path)]
        if len(layers) > 1:
            if "buildings" not in layers:
                raise ConfigError(
                    f"{path}: {len(layers)} layers ({', '.join(layers)}) and none is named "
                    "'buildings'; rename the footprint layer to 'buildings'"
                )
            layer = "buildings"
        frame = gpd.read_file(path, layer=layer, engine="pyogrio")
    except ConfigError:
        raise
    except Exception as exc:  # pyogrio/GDAL raise a variety of errors for broken files
        raise ConfigError(f"{path}: cannot read the buildings layer ({exc})") from None
    check_building_ids(list(frame.columns), frame.get("building_id", []), source=str(path))
    frame["building_id"] = [id_text(v) for v in frame["building_id"]]
    if frame.crs is None and default_crs is not None:
        frame = frame.set_crs(default_crs)
    return frame


def _image_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def list_image_files(root: str | Path) -> tuple[Path, list[Path]]:
    """The image directory (``root/images`` or ``root``) and its image files, sorted.

    Hidden files (``.x.tif``, macOS ``._x.jpg``) are skipped; sub-directories are not searched.
    """
    root = Path(root)
    images_dir = root / "images"
    in_root = _image_files(root)
    if images_dir.is_dir():
        in_images = _image_files(images_dir)
        if in_images and in_root:
            raise ConfigError(
                f"{root}: images both in images/ and in the survey directory itself "
                f"(e.g. {in_root[0].name}); move them all into images/"
            )
        if in_images:
            return images_dir, in_images
    return root, in_root


def _sidecars(path: Path, siblings: Mapping[str, Path], suffixes: Sequence[str]) -> list[Path]:
    stem = path.stem.lower()
    return [siblings[stem + s] for s in suffixes if stem + s in siblings]


def _read_world_file(
    path: Path, display_dir: str, siblings: Mapping[str, Path]
) -> tuple[Affine | None, str | None]:
    found: list[tuple[Path, Affine]] = []
    preferred = {".jpg": ".jgw", ".jpeg": ".jgw", ".png": ".pgw", ".tif": ".tfw", ".tiff": ".tfw"}
    order = sorted(WORLD_FILE_SUFFIXES, key=lambda s: s != preferred.get(path.suffix.lower()))
    for world in _sidecars(path, siblings, order):
        shown = display_dir + world.name
        try:
            found.append((world, parse_world_file(world.read_text(encoding="ascii"))))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise _SidecarError(
                f"{shown}: not a valid world file ({exc}); it must hold 6 numbers, one per line"
            ) from None
    if not found:
        return None, None
    first_path, first = found[0]
    for other_path, other in found[1:]:
        if not same_transform(other, first):
            raise _SidecarError(
                f"{display_dir}{path.name}: world files {first_path.name} and {other_path.name} "
                "disagree; delete the wrong one"
            )
    return first, first_path.name


def _read_prj(
    path: Path, display_dir: str, siblings: Mapping[str, Path]
) -> tuple[CRS | None, str | None]:
    found = _sidecars(path, siblings, (".prj",))
    if not found:
        return None, None
    prj = found[0]
    try:
        return CRS.from_user_input(prj.read_text(encoding="utf-8", errors="replace").strip()), (
            prj.name
        )
    except (OSError, CRSError) as exc:
        raise _SidecarError(
            f"{display_dir}{prj.name}: not a CRS definition ({str(exc).splitlines()[0]}); "
            "write the CRS as WKT (e.g. gdalsrsinfo -o wkt EPSG:32633 > file.prj)"
        ) from None


class _SidecarError(Exception):
    """A sidecar of one image is unreadable (becomes that image's error message)."""


def _tiff_data_end(src: Any) -> int:
    """Largest byte offset that the TIFF's (full-resolution) data blocks reach."""
    bands = range(1, src.count + 1) if src.interleaving == Interleaving.band else [1]
    end = 0
    for band in bands:
        windows = list(src.block_windows(band))
        if len(windows) > _MAX_TIFF_BLOCKS_CHECKED:
            windows = windows[-1:]
        for (row, col), _ in windows:
            offset = src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)
            size = src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band)
            if offset and size:
                end = max(end, int(offset) + int(size))
    return end


def _truncation(path: Path, driver: str, size_bytes: int, src: Any) -> str | None:
    """Why the file looks truncated, or None."""
    if driver == "GTiff":
        end = _tiff_data_end(src)
        if end > size_bytes:
            return f"truncated: its TIFF data blocks need {end} bytes but the file has {size_bytes}"
        return None
    with open(path, "rb") as f:
        f.seek(max(0, size_bytes - _JPEG_TAIL_BYTES))
        tail = f.read()
    if driver == "PNG" and b"IEND" not in tail[-64:]:
        return "truncated: no PNG end chunk (IEND)"
    if driver == "JPEG" and b"\xff\xd9" not in tail:
        return "truncated: no JPEG end marker"
    return None


def read_image_file(
    path: str | Path,
    *,
    display_name: str | None = None,
    siblings: Mapping[str, Path] | None = None,
) -> ImageFile:
    """Hash an image file, read its raster header and georeferencing sidecars; never raises
    for a bad image.

    Parameters
    ----------
    path : Path
        The image file.
    display_name : str, optional
        Name used in messages (e.g. ``'images/a.tif'``); defaults to the file name.
    siblings : mapping of str to Path, optional
        Lower-cased file names of the image's directory (saves a listing per image).

    Returns
    -------
    ImageFile
        With ``error`` set (one line: the file, the problem, the fix) if the file is empty,
        not a readable raster, truncated, or a sidecar is unreadable.
    """
    path = Path(path)
    shown = display_name or path.name
    display_dir = shown[: len(shown) - len(path.name)]
    if siblings is None:
        siblings = {p.name.lower(): p for p in path.parent.iterdir()}
    size_bytes = path.stat().st_size
    digest = hash_file(path)
    base: dict[str, Any] = dict(
        path=path, name=path.name, display_name=shown, sha256=digest, size_bytes=size_bytes
    )
    if size_bytes == 0:
        return ImageFile(
            **base, error=f"{shown}: the file is empty (0 bytes); copy it again from the source"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                header = read_header(src)
                has_transform = src.transform != Affine.identity()
                raster_transform = src.transform if has_transform else None
                raster_crs = CRS.from_wkt(src.crs.to_wkt()) if src.crs else None
                has_gcps = bool(src.gcps[0])
                truncated = _truncation(path, src.driver, size_bytes, src)
    except (RasterioError, CRSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return ImageFile(
            **base,
            error=f"{shown}: cannot read the raster header ({reason}); the file is corrupt or "
            "not an image: export or copy it again",
        )
    if truncated:
        return ImageFile(**base, header=header, error=f"{shown}: {truncated}; copy it again")
    try:
        world_transform, world_file = _read_world_file(path, display_dir, siblings)
        prj_crs, prj_file = _read_prj(path, display_dir, siblings)
    except _SidecarError as exc:
        return ImageFile(**base, header=header, error=str(exc))
    sources = GeorefSources(
        width=header.width,
        height=header.height,
        raster_transform=raster_transform,
        raster_crs=raster_crs,
        world_transform=world_transform,
        world_file=world_file,
        prj_crs=prj_crs,
        prj_file=prj_file,
        has_gcps=has_gcps,
    )
    return ImageFile(**base, header=header, sources=sources)


def discover_survey(
    survey_dir: str | Path,
    *,
    preset: str | Path | None = None,
    config_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> Survey:
    """Read and validate a survey directory before any work.

    Parameters
    ----------
    survey_dir : Path
        The survey directory (layout in :mod:`cracksurvey.survey`).
    preset, config_path, overrides
        Config layers around survey.yaml (see :func:`config_layers`).
    progress : callable, optional
        Called with ``ProgressEvent('discover', done, total, image=name)`` after each image
        file is read (hashing is the slow part on large surveys).

    Returns
    -------
    Survey
        Images that cannot be read have ``status='error'`` and a one-line ``message``.

    Raises
    ------
    ConfigError
        Not a directory, no images, malformed survey.yaml / images.csv / buildings layer, or
        contradictions between them and the rasters (all listed in one message).
    """
    root = Path(survey_dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory; give the survey directory")
    survey_yaml: Path | None = root / "survey.yaml"
    if not (root / "survey.yaml").is_file():
        if (root / "survey.yml").is_file():
            raise ConfigError(f"{root / 'survey.yml'}: rename it to survey.yaml")
        survey_yaml = None
    layers = config_layers(
        preset=preset, survey_yaml=survey_yaml, config_path=config_path, overrides=overrides
    )
    config = build_config(layers)

    image_dir, files = list_image_files(root)
    if not files:
        raise ConfigError(
            f"{root}: no images found (looked for {', '.join('*' + s for s in IMAGE_SUFFIXES)} "
            "in images/ and in the directory itself)"
        )
    csv_path = root / "images.csv"
    rows = read_images_csv(csv_path) if csv_path.is_file() else {}
    buildings_path = find_buildings_file(root)
    buildings = None
    building_ids = None
    if buildings_path is not None:
        buildings = read_buildings(buildings_path, default_crs=config.survey.crs)
        building_ids = set(buildings["building_id"])

    image_dir_rel = "" if image_dir == root else image_dir.relative_to(root).as_posix()
    prefix = f"{image_dir_rel}/" if image_dir_rel else ""
    siblings = {p.name.lower(): p for p in image_dir.iterdir()}
    image_files = []
    for done, path in enumerate(files, start=1):
        image_files.append(
            read_image_file(path, display_name=prefix + path.name, siblings=siblings)
        )
        if progress is not None:
            progress(ProgressEvent("discover", done, len(files), image=path.name))

    records = build_records(
        image_files,
        rows,
        config,
        building_ids=building_ids,
        csv_source=str(csv_path),
        buildings_source=str(buildings_path),
        image_dir_rel=image_dir_rel,
    )
    failed = sum(r.status == "error" for r in records)
    logger.info(
        "survey %s: %d images (%d unreadable), %s, %s",
        root,
        len(records),
        failed,
        f"{len(rows)} images.csv rows" if rows else "no images.csv",
        f"buildings from {buildings_path.name}" if buildings_path else "no buildings layer",
    )
    return Survey(
        root=root,
        image_dir=image_dir,
        config=config,
        images=records,
        buildings=buildings,
        buildings_path=buildings_path,
        images_csv_path=csv_path if csv_path.is_file() else None,
        survey_yaml_path=survey_yaml,
        config_sources=tuple(source for source, _ in layers),
    )
