"""The cache of a run's output folder, by stage: what makes an interrupted run resumable and a
rerun cheap.

Two stages are cached apart, so that changing what is measured never reruns the network:

- **predictions** (:class:`PredictionCache`, ``<out>/.cache/.predictions/<key>/``): an image's
  distance map and mask (COGs, hard-linked, else copied, to ``<out>/rasters/``) and its sparse
  skeleton with widths (``skeleton.npz``), keyed by the image content, the model checksum, the
  threshold, the precision and the tiling;
- **results** (:class:`ImageCache`, ``<out>/.cache/<key>/``): the image's outcome, crack and
  branch layers and coverage (``layers.npz`` + ``entry.json``), keyed by its prediction key,
  the vectorize and CPP settings, its georeferencing and ids.

Both keys also hold the package's version and a fingerprint of its source code
(:func:`code_fingerprint`): a run with other code recomputes rather than reuse what older code
made.

Entries use safe, exact formats (no pickle: an output folder may come from someone else;
numbers as binary arrays, geometries as WKB, strings as JSON).

Atomicity: an entry is built in a staging folder (``.staging-*`` beside the entries) and
renamed to its key in one step, ``entry.json`` (the manifest, listing every file and its size)
written last; a folder whose ``entry.json`` is missing, unreadable or whose files do not have
the sizes it lists is not an entry (a crash, a full disk, a hand edit) and is recomputed.
Staging leftovers of a killed run are removed by :meth:`EntryCache.prune`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from cracksurvey.skeleton import SKELETON_FIELDS, TileSkeleton

__all__ = [
    "CACHE_DIR",
    "RASTER_NAMES",
    "CacheEntry",
    "EntryCache",
    "ImageCache",
    "PredictionCache",
    "cache_key",
    "code_fingerprint",
    "source_fingerprint",
    "publish_raster",
    "read_skeleton",
    "write_skeleton",
]

logger = logging.getLogger(__name__)

CACHE_DIR = ".cache"
PREDICTIONS_DIR = ".predictions"
#: Bump when the entry layout changes: old entries then simply miss.
CACHE_FORMAT = 2
_ENTRY_JSON = "entry.json"
_LAYERS_NPZ = "layers.npz"
SKELETON_NPZ = "skeleton.npz"
#: The COGs of a prediction entry: distance map, mask.
RASTER_NAMES = ("distance.tif", "mask.tif", "semantics.tif")


def cache_key(parts: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``parts`` as canonical JSON (sorted keys; non-JSON values as ``str``),
    with the installed code's fingerprint (:func:`code_fingerprint`).

    >>> cache_key({"b": 1, "a": [0.5, None]}) == cache_key({"a": [0.5, None], "b": 1})
    True
    """
    text = json.dumps(
        {"format": CACHE_FORMAT, "code": code_fingerprint(), **parts},
        sort_keys=True,
        default=str,
        allow_nan=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Fingerprint of this package's sources (:func:`source_fingerprint`), once per process.

    The version number alone does not change between the commits of a source checkout
    (``pip install -e``): a change to how tiles are cut or widths measured, made without a
    change to any setting, would otherwise reuse the predictions of the code before it. Any
    change to the code misses the cache instead; reading the sources takes a few milliseconds.
    """
    return source_fingerprint(Path(__file__).resolve().parents[1])


def source_fingerprint(root: Path) -> str:
    """SHA-256 (hex) of the ``*.py`` files under ``root``: the relative path and bytes of each,
    in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """A cache entry read back.

    Attributes
    ----------
    key : str
    path : Path
        The entry's folder (its files: ``path / name``).
    record : dict
        JSON-ready data of the entry, as committed.
    frames : dict of str to GeoDataFrame or None
        The entry's layers, as committed (``None`` stays ``None``; empty without layers).
    """

    key: str
    path: Path
    record: dict[str, Any]
    frames: dict[str, Any] = field(default_factory=dict)


class EntryCache:
    """Committed entries under one folder (the base of the two stage caches).

    Parameters
    ----------
    root : Path
        The folder of the entries.
    reuse : bool
        False: :meth:`lookup` always misses (``--no-cache``); entries are still committed, so
        an interrupted run stays resumable.
    """

    def __init__(self, root: str | Path, *, reuse: bool = True) -> None:
        self.root = Path(root)
        self.reuse = reuse

    def lookup(self, key: str) -> CacheEntry | None:
        """The complete entry of ``key``, or None (missing, half-written or damaged)."""
        return self._read(key) if self.reuse else None

    def has(self, key: str) -> bool:
        """Whether ``key`` has a committed entry (cheap: its manifest exists; not validated)."""
        return self.reuse and (self.root / key / _ENTRY_JSON).is_file()

    def _read(self, key: str) -> CacheEntry | None:
        entry = self.root / key
        try:
            meta = json.loads((entry / _ENTRY_JSON).read_text(encoding="utf-8"))
            sizes = meta["sizes"]
            if meta.get("key") != key or any(
                (entry / name).stat().st_size != size for name, size in sizes.items()
            ):
                raise ValueError("its files do not match its manifest")
            frames = _read_frames(entry / _LAYERS_NPZ, meta["frames"]) if meta["frames"] else {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if entry.exists():
                logger.warning("%s: damaged cache entry, recomputing (%s)", entry, exc)
            return None
        return CacheEntry(key, entry, meta["record"], frames)

    def stage(self) -> Path:
        """A new, empty staging folder for an entry (its files are written there)."""
        path = self.root / f".staging-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        return path

    def commit(
        self,
        staging: Path,
        key: str,
        record: Mapping[str, Any],
        frames: Mapping[str, Any] | None = None,
    ) -> CacheEntry:
        """Write ``record`` (and ``frames``) into ``staging`` and make it the entry of ``key``.

        Every file already in ``staging`` becomes part of the entry. Returns the entry as read
        back from disk, so a fresh and a resumed run use identical data.
        """
        frame_meta = _write_frames(staging / _LAYERS_NPZ, frames) if frames else None
        sizes = {p.name: p.stat().st_size for p in sorted(staging.iterdir()) if p.is_file()}
        meta = {"key": key, "record": record, "frames": frame_meta, "sizes": sizes}
        _write_synced(staging / _ENTRY_JSON, json.dumps(meta, allow_nan=True).encode())
        entry = self.root / key
        if entry.exists():  # a damaged entry of the same key
            shutil.rmtree(entry)
        os.replace(staging, entry)
        cached = self._read(key)
        if cached is None:
            raise OSError(f"{entry}: cache entry unreadable right after writing it")
        return cached

    def discard(self, staging: Path) -> None:
        """Delete a staging folder (the work failed)."""
        shutil.rmtree(staging, ignore_errors=True)

    def prune(self, keep: set[str] | None) -> int:
        """Delete staging leftovers and the entries whose key is not in ``keep``.

        ``keep=None`` deletes staging leftovers only (start of a run). Folders whose name starts
        with a dot and that are not staging folders (another stage's cache) are left alone.

        Returns
        -------
        int
            Folders deleted.
        """
        if not self.root.is_dir():
            return 0
        removed = 0
        for path in self.root.iterdir():
            staging = path.name.startswith(".staging-")
            entry = not path.name.startswith(".")
            if path.is_dir() and (
                staging or (keep is not None and entry and path.name not in keep)
            ):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed


class ImageCache(EntryCache):
    """Results of the images (outcome, layers, coverage) in ``<out_dir>/.cache``."""

    def __init__(self, out_dir: str | Path, *, reuse: bool = True) -> None:
        super().__init__(Path(out_dir) / CACHE_DIR, reuse=reuse)


class PredictionCache(EntryCache):
    """Predictions of the images (COGs, sparse skeleton) in ``<out_dir>/.cache/.predictions``."""

    def __init__(self, out_dir: str | Path, *, reuse: bool = True) -> None:
        super().__init__(Path(out_dir) / CACHE_DIR / PREDICTIONS_DIR, reuse=reuse)


def write_skeleton(path: Path, skeleton: TileSkeleton) -> None:
    """Save a sparse skeleton (all its arrays, :data:`SKELETON_FIELDS`) exactly, without pickle."""
    with open(path, "wb") as f:
        arrays: dict[str, Any] = skeleton.arrays()
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


def read_skeleton(path: Path) -> TileSkeleton:
    """The skeleton :func:`write_skeleton` saved."""
    with np.load(path, allow_pickle=False) as npz:
        return TileSkeleton(**{name: npz[name] for name in SKELETON_FIELDS})


def publish_raster(source: Path, target: Path) -> None:
    """Make ``target`` hold ``source``: a hard link (no extra space), else an atomic copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (another filesystem, FAT, some network shares)
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------------------
# GeoDataFrames <-> npz + JSON, exactly and without pickle
# --------------------------------------------------------------------------------------------
def _write_frames(path: Path, frames: Mapping[str, Any]) -> dict[str, Any]:
    """Save the frames' columns into one ``.npz``; return the JSON metadata to read them back."""
    arrays: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for name, frame in frames.items():
        if frame is None:
            meta[name] = None
            continue
        columns: list[dict[str, Any]] = []
        for column in frame.columns:
            if column == frame.geometry.name:
                continue
            series = frame[column]
            key = f"{name}/{len(columns)}"
            if isinstance(series.dtype, np.dtype) and series.dtype.kind in "biuf":
                arrays[key] = series.to_numpy()
                columns.append({"name": column, "dtype": series.dtype.str, "array": key})
            else:
                values = [None if _is_missing(v) else _json_scalar(v) for v in series]
                columns.append({"name": column, "dtype": str(series.dtype), "values": values})
        wkb = shapely.to_wkb(np.asarray(frame.geometry.values), output_dimension=3)
        lengths = np.array([len(b) for b in wkb], np.int64)
        arrays[f"{name}/wkb"] = np.frombuffer(b"".join(wkb), np.uint8)
        arrays[f"{name}/wkb_lengths"] = lengths
        meta[name] = {
            "columns": columns,
            "geometry": frame.geometry.name,
            "crs": frame.crs.to_wkt() if frame.crs is not None else None,
        }
    with open(path, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    return meta


def _read_frames(path: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    frames: dict[str, Any] = {}
    with np.load(path, allow_pickle=False) as npz:
        for name, spec in meta.items():
            if spec is None:
                frames[name] = None
                continue
            data = {}
            for column in spec["columns"]:
                if "array" in column:
                    data[column["name"]] = pd.Series(npz[column["array"]], dtype=column["dtype"])
                else:
                    data[column["name"]] = pd.Series(column["values"], dtype=column["dtype"])
            buffer = npz[f"{name}/wkb"].tobytes()
            ends = np.cumsum(npz[f"{name}/wkb_lengths"])
            starts = ends - npz[f"{name}/wkb_lengths"]
            geometry = shapely.from_wkb([buffer[s:e] for s, e in zip(starts, ends)])
            frames[name] = gpd.GeoDataFrame(
                pd.DataFrame(data),
                geometry=gpd.GeoSeries(geometry, crs=spec["crs"], name=spec["geometry"]),
            )
    return frames


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _json_scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
