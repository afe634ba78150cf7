"""The crack verifier in ``process``: scores from the image, the threshold, the drop.

:mod:`cracksurvey.verify` holds the network; this module reads the image patches along each
crack of an image's layer and removes the cracks the verifier rejects.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from numpy.typing import NDArray

from cracksurvey.config import ProcessConfig
from cracksurvey.engine.decoded import image_key, release_shared, shared_decode
from cracksurvey.engine.worker import STREAM_DRIVERS, WHOLE_DECODE_MAX_PX
from cracksurvey.io.raster import RasterSource, describe_raster
from cracksurvey.predict import percentile_scale, prepare_bands, valid_pixels
from cracksurvey.survey import ImageRecord
from cracksurvey.tiling import read_window_reflect
from cracksurvey.verify import (
    CrackVerifier,
    VerifierCard,
    crack_points,
    load_verifier,
    read_patches,
    score_cracks,
)

__all__ = [
    "Verifier",
    "apply_verifier",
    "drop_unverified",
    "image_patches",
    "verifier_for",
    "verifier_key",
    "verifier_scores",
]

log = logging.getLogger(__name__)

#: The verifier a run applies: network, card and threshold.
Verifier = tuple[CrackVerifier, VerifierCard, float]


@functools.lru_cache(maxsize=2)
def _verifier(weights: str | None) -> tuple[CrackVerifier, VerifierCard]:
    return load_verifier(weights)


def verifier_for(config: ProcessConfig, model_sha256: str) -> Verifier | None:
    """The crack verifier a run uses with the crack model ``model_sha256`` and its threshold,
    or None (``verify.mode`` off, or auto behind a crack model it was not trained on)."""
    vcfg = config.verify
    if vcfg.mode == "off":
        return None
    net, card = _verifier(vcfg.weights)
    if vcfg.mode == "auto" and card.crack_model_sha256 != model_sha256:
        return None
    min_score = card.min_score if vcfg.min_score is None else float(vcfg.min_score)
    return net, card, min_score


WINDOWED_READ_FACTOR = 8
"""A tiled image's patches are read window by window when they cover less than 1/8 of it
(a window decodes its blocks whole, up to 4 of them for a patch)."""


def image_patches(
    path: str | Path, rows: NDArray[np.int64], cols: NDArray[np.int64], patch_px: int
) -> NDArray[np.uint8]:
    """RGB uint8 patches of an image centred at pixel points (the engine's band rules: nodata
    filled, non-uint8 scaled by the image's percentiles). Photos (JPEG, PNG) up to the engine's
    whole-decode size (64 MP) are read whole, from the copy the engine's workers share when it
    is still there; tiled images whole too unless the patches cover little of them; the others
    one window per point."""
    header = describe_raster(path)
    half = patch_px // 2
    with RasterSource(header.path) as source:
        scale = None
        if header.dtype != "uint8":
            small = source.read_overview()
            valid = valid_pixels(small, nodata=header.nodata, alpha_band=header.alpha_band)
            scale = percentile_scale(small, valid=valid)

        def rgb_of(raw: np.ndarray) -> np.ndarray:
            return prepare_bands(
                raw, nodata=header.nodata, alpha_band=header.alpha_band, scale=scale
            )[0]

        stream = source.driver in STREAM_DRIVERS
        # a tiled file with few points: their windows (GDAL caches the blocks they share)
        # decode less than the whole image (a 4096² GeoTIFF with 10 cracks: 0.1 s less)
        few = rows.size * patch_px**2 * WINDOWED_READ_FACTOR < header.height * header.width
        if header.height * header.width <= WHOLE_DECODE_MAX_PX and (stream or not few):

            def decode() -> np.ndarray:
                return source.read(0, header.height, 0, header.width)

            if stream and header.dtype == "uint8":
                # a photo the engine's workers decoded a moment ago: map their copy
                shape = (header.band_count, header.height, header.width)
                whole = shared_decode(repr(image_key(header.path)), shape, decode)
                release_shared()  # a copy this process had to write itself is not kept
            else:
                whole = decode()
            return read_patches(rgb_of(whole), rows, cols, patch_px)
        out = np.empty((rows.size, 3, patch_px, patch_px), np.uint8)
        rows = np.clip(rows, 0, header.height - 1)  # as read_patches does
        cols = np.clip(cols, 0, header.width - 1)
        for j, (r, c) in enumerate(zip(rows, cols)):
            # reflected at the image's border, as read_patches does on the whole image
            window = (
                int(r) - half,
                int(r) - half + patch_px,
                int(c) - half,
                int(c) - half + patch_px,
            )
            out[j] = rgb_of(read_window_reflect(source.read, window, header.height, header.width))
        return out


def verifier_scores(
    record: ImageRecord,
    cracks: gpd.GeoDataFrame,
    transform: Any,
    net: CrackVerifier,
    card: VerifierCard,
) -> NDArray[np.float64]:
    """``verifier_score`` of each crack (:mod:`cracksurvey.verify`) from the image itself."""
    xy, index = shapely.get_coordinates(cracks.geometry.values, return_index=True)
    col, row = ~transform @ (xy[:, 0], xy[:, 1])
    # vertices come grouped by crack, in order (shapely)
    lines = np.split(np.column_stack([row, col]), np.searchsorted(index, np.arange(1, len(cracks))))
    rows, cols, which = crack_points(lines, per_crack=card.points_per_crack)
    patches = image_patches(record.path, rows, cols, card.patch_px)
    return score_cracks(net, card, patches, which, len(cracks))


def drop_unverified(
    cracks: gpd.GeoDataFrame, branches: gpd.GeoDataFrame, *, min_score: float
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, int]:
    """Cracks (and their branches) scoring under ``min_score`` removed, the others renumbered
    1..N in their order; returns the number removed. A crack without a score is kept."""
    score = cracks["verifier_score"].to_numpy(dtype=np.float64)
    keep = ~(score < min_score)
    if keep.all():
        return cracks, branches, 0
    kept = cracks.loc[keep].copy()
    renumber = dict(zip(kept["crack_id"].to_numpy(), range(1, len(kept) + 1)))
    kept["crack_id"] = np.arange(1, len(kept) + 1, dtype=np.int64)
    kept = kept.reset_index(drop=True)
    on = branches["crack_id"].isin(list(renumber)).to_numpy()
    kept_branches = branches.loc[on].copy()
    kept_branches["crack_id"] = kept_branches["crack_id"].map(renumber).astype(np.int64)
    return kept, kept_branches.reset_index(drop=True), int((~keep).sum())


def apply_verifier(
    record: ImageRecord,
    cracks: gpd.GeoDataFrame,
    branches: gpd.GeoDataFrame,
    transform: Any,
    verifier: Verifier | None,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, int | None]:
    """Score an image's cracks (``verifier_score``) and drop those under the threshold; returns
    the cracks and branches kept and the number of cracks dropped (None without a verifier)."""
    if verifier is None or len(cracks) == 0:
        return cracks, branches, None if verifier is None else 0
    net, card, min_score = verifier
    cracks["verifier_score"] = verifier_scores(record, cracks, transform, net, card)
    cracks, branches, dropped = drop_unverified(cracks, branches, min_score=min_score)
    log.info("%s: %d cracks under the verifier's threshold dropped", record.name, dropped)
    return cracks, branches, dropped


def verifier_key(verifier: Verifier | None) -> dict[str, Any] | None:
    """What of the verifier decides a measured image (for the stage cache's key)."""
    return None if verifier is None else {"sha256": verifier[1].sha256, "min_score": verifier[2]}
