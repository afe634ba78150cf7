"""Model stage: RGB tiles in, distance (and crack-body probability) arrays out.

Also the band preparation that turns any input band layout into the RGB uint8 the network was
trained on, plus a validity (nodata) mask.

Band layouts (:func:`prepare_bands`):

- 1 band: grey, replicated to R, G, B (also 2 bands: the first is grey);
- 3 bands: RGB;
- an alpha band (the file's colour interpretation says so; RGBA, grey + alpha): dropped,
  alpha == 0 is nodata;
- more colour bands: the first three are taken as RGB (the IO layer logs a note);
- uint8 is used as is; any other dtype (16-bit, float) is scaled linearly from its 2nd-98th
  percentiles to 0-255. The percentiles are computed ONCE per image from a decimated overview
  read (:func:`percentile_scale` on what :meth:`cracksurvey.io.raster.RasterSource.read_overview`
  returns), never per tile, so tiles of one image share one scale and no seam appears.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from cracksurvey import cpu_ops
from cracksurvey.config import Precision
from cracksurvey.model import ModelCard

log = logging.getLogger(__name__)

_BF16_SUPPORTED: bool | None = None


def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU (AVX-512 BF16 / AMX).

    Without native support autocast still works but is emulated and slower than fp32.
    """
    global _BF16_SUPPORTED
    if _BF16_SUPPORTED is None:
        supported = False
        if torch.backends.mkldnn.is_available():
            try:
                supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
            except (AttributeError, RuntimeError):  # private API; absent on some builds
                supported = False
        _BF16_SUPPORTED = supported
    return _BF16_SUPPORTED


def cpu_amx_supported() -> bool:
    """Whether this CPU exposes AMX tiles (Intel Sapphire Rapids and later, if the VM passes them)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # private API; absent on some builds
        return False


@functools.cache
def cpu_vendor() -> str:
    """The CPU's vendor id (``GenuineIntel``, ``AuthenticAMD``, ...); empty where unknown.

    Read once per process: ``auto`` is resolved for every tile.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_kind() -> str:
    """The CPU's model name and the instruction sets that decide the precision, e.g.
    ``AMD EPYC (avx2, avx512f, avx512_bf16)``: what benchmarks and test runs name their CPU by."""
    import platform

    name, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and not name:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    name = name or platform.processor() or "unknown CPU"
    has = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{name} ({', '.join(has) or 'no AVX2'})"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if this process sees a GPU, else ``mps``, else ``cpu``.

    Other values are returned unchanged. On a cluster this runs in each worker, so a mixed
    cluster uses its GPUs where they are.
    """
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


PRECISION_ENV = "CRACKSURVEY_PRECISION"
"""Environment variable that decides what ``precision: auto`` means on this machine (``bf16`` or
``fp32``), e.g. to run the whole test suite or a survey in one stated precision on any CPU."""


def auto_precision(device: str | torch.device = "cpu") -> Precision:
    """What ``precision: auto`` runs on ``device``.

    ``CRACKSURVEY_PRECISION=bf16|fp32`` in the environment decides it wherever it is set.
    Otherwise bf16 where it was measured clearly faster for this network, fp32 elsewhere
    (docs/performance.md, "Precision"): bf16 on CUDA devices that support it, on CPUs with AMX
    and on AMD CPUs with AVX-512 BF16. An Intel CPU with AVX-512 BF16 but no AMX runs this
    network slower in bf16, so auto is fp32 there, as on every CPU without native bf16.
    """
    forced = os.environ.get(PRECISION_ENV, "").strip().lower()
    if forced:
        if forced not in ("bf16", "fp32"):
            raise ValueError(f"{PRECISION_ENV}={forced!r}: expected 'bf16' or 'fp32' (or unset)")
        return forced  # type: ignore[return-value]
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if dev.type == "cpu":
        fast = cpu_amx_supported() or cpu_vendor() == "AuthenticAMD"
        return "bf16" if cpu_bf16_supported() and fast else "fp32"
    return "fp32"


def effective_precision(precision: Precision, device: str | torch.device = "cpu") -> Precision:
    """The precision that will actually run.

    ``auto`` resolves by :func:`auto_precision`. An explicit ``bf16`` runs bf16 on every device:
    on a CPU without native bf16 (no AVX-512 BF16 / AMX) PyTorch emulates it, slower than fp32,
    so results can be checked in bf16 on any machine. Emulated and native bf16 round alike but
    accumulate in different orders: their crack layers differ as little as bf16 and fp32 do
    (docs/performance.md, "Precision"), not bit for bit.
    """
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision {precision!r}: expected 'auto', 'bf16' or 'fp32'")
    if precision == "auto":
        return auto_precision(device)
    return precision


_HEAP_KEPT = False

HEAP_ENVIRON = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1),
}
"""What :func:`keep_freed_memory` does, as glibc environment variables for a process about to
start (the engine's local Dask workers get them; export them for ``dask worker`` elsewhere).
At start they also cover threads that have already allocated when the call could come."""


def keep_freed_memory() -> bool:
    """Make glibc's allocator keep freed memory for reuse (once per process; True if done).

    Torch's CPU tensors come from ``malloc``; glibc serves every block above 32 MB (a 1/8-width
    UNet16 on a 1280 x 1280 tile has 52 MB activations) with a fresh ``mmap`` and returns it
    on free, so every forward page-faults all its activations in again (about a quarter of a
    forward's time on the CPU; docs/performance.md). Memory is not lower or higher at the
    peak; it is just not handed back between tiles. A no-op where the C library has no ``mallopt`` (not glibc). Threads that allocated
    before the call keep their own arena, whose heaps still come and go: processes started for
    the model work get :data:`HEAP_ENVIRON` instead (the engine's local workers do).
    """
    global _HEAP_KEPT
    if _HEAP_KEPT:
        return True
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # glibc's malloc.h
    _HEAP_KEPT = all(
        mallopt(option, value)
        for option, value in (
            (m_mmap_max, 0),
            (m_trim_threshold, 2**31 - 1),
            # one arena: the heaps of other threads' arenas are themselves mmap-ed and given
            # back when free (a Dask task runs in a worker thread, not the main one)
            (m_arena_max, 1),
        )
    )
    return _HEAP_KEPT


def release_freed_memory() -> None:
    """Give the memory :func:`keep_freed_memory` keeps back to the system (``malloc_trim``);
    for a worker about to sit idle. A no-op without glibc."""
    malloc_trim = _libc_function("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside (None: left as they are), restored after.

    Set in the thread that runs the work: OpenMP reads the count of the calling thread.
    """
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _libc_function(name: str) -> Any:
    """A function of the process's C library (glibc's malloc tuning), None if it has none."""
    import ctypes

    try:
        return getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError):
        return None


_fallback_logged = False


def predict_tile(
    model: nn.Module,
    card: ModelCard,
    rgb: np.ndarray,
    *,
    precision: Precision = "bf16",
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the network on one RGB tile.

    Parameters
    ----------
    model : the network (eval mode), output ``(1, 1 or 2, H, W)``.
    card : its model card (normalisation, input multiple).
    rgb : ndarray of shape (3, H, W), uint8
        H and W multiples of ``card.input_multiple``.
    precision : {'bf16', 'fp32'}
        bf16 autocast (emulated, and logged once, on a CPU without native bf16) or fp32.
    device : torch device the model lives on.

    Returns
    -------
    distance : ndarray of shape (H, W), float32, pixels
    body_prob : ndarray of shape (H, W), float32 in [0, 1], or None without a body head
    """
    global _fallback_logged
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"rgb of shape {rgb.shape}: expected (3, H, W)")
    _, h, w = rgb.shape
    m = card.input_multiple
    if h % m or w % m:
        raise ValueError(f"tile of {h}x{w} px: height and width must be multiples of {m}")
    run = effective_precision(precision, device)
    if (
        run == "bf16"
        and torch.device(device).type == "cpu"
        and not cpu_bf16_supported()
        and not _fallback_logged
    ):
        log.info("bf16 is not supported natively on this CPU; it is emulated (slower than fp32)")
        _fallback_logged = True
    device = torch.device(device)
    with torch.inference_mode():
        if device.type == "cpu" and cpu_ops.ENABLED:  # one pass, already in bf16 if it runs
            dtype = torch.bfloat16 if run == "bf16" else torch.float32
            x = cpu_ops.normalised_input(rgb, card.mean, card.std, dtype)
        else:  # uint8 -> float channels-last in one copy, normalised in place, moved
            std = torch.tensor(card.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
            mean = torch.tensor(card.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
            x = torch.empty((1, 3, h, w), dtype=torch.float32, memory_format=torch.channels_last)
            x.copy_(torch.from_numpy(rgb).unsqueeze(0))
            x = x.mul_(1.0 / std).add_(-mean / std).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run == "bf16"):
            out = model(x)
        planes = out[0].float().cpu().contiguous()  # (heads, H, W), one copy out of NHWC
        distance = planes[0].numpy()
        body = torch.sigmoid_(planes[1]).numpy() if planes.shape[0] > 1 else None
    return distance, body


def percentile_scale(
    sample: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> np.ndarray:
    """Per-band linear scale for non-uint8 imagery, from a decimated sample of the image.

    Parameters
    ----------
    sample : ndarray of shape (bands, rows, cols)
        A decimated read of the whole image (an overview), any numeric dtype.
    valid : ndarray of shape (rows, cols), bool, optional
        Pixels to use (nodata excluded).
    percentiles : (low, high) in percent.

    Returns
    -------
    ndarray of shape (bands, 2), float64
        ``[low, high]`` per band; :func:`prepare_bands` maps low -> 0 and high -> 255.
    """
    bands = sample.reshape(sample.shape[0], -1).astype(np.float64)
    if valid is not None:
        bands = bands[:, valid.reshape(-1)]
    scale = np.zeros((sample.shape[0], 2))
    if bands.shape[1] == 0:
        scale[:, 1] = 1.0
        return scale
    finite = np.isfinite(bands)
    for b in range(bands.shape[0]):
        values = bands[b][finite[b]]
        if values.size:
            scale[b] = np.percentile(values, percentiles)
        if scale[b, 1] <= scale[b, 0]:
            scale[b, 1] = scale[b, 0] + 1.0
    return scale


def prepare_bands(
    array: np.ndarray,
    *,
    nodata: float | None = None,
    alpha_band: int | None = None,
    scale: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Any band layout to RGB uint8 plus a validity mask (see the module docstring).

    Parameters
    ----------
    array : ndarray of shape (bands, rows, cols)
    nodata : float, optional
        Pixels where every colour band equals ``nodata`` (or NaN for float data) are invalid.
    alpha_band : int, optional
        0-based index of the alpha band; alpha == 0 is invalid. The band is dropped.
    scale : ndarray of shape (bands, 2), optional
        Per-band ``[low, high]`` (:func:`percentile_scale`) for non-uint8 data, indexed like
        ``array``'s bands. Required when ``array`` is not uint8.

    Returns
    -------
    rgb : ndarray of shape (3, rows, cols), uint8
    valid : ndarray of shape (rows, cols), bool
    """
    if array.ndim != 3 or array.shape[0] < 1:
        raise ValueError(f"array of shape {array.shape}: expected (bands, rows, cols)")
    colour = colour_bands(array.shape[0], alpha_band=alpha_band)
    valid = valid_pixels(array, nodata=nodata, alpha_band=alpha_band)
    data = _bands(array, colour)
    if data.dtype == np.uint8:
        rgb = np.ascontiguousarray(data)
    else:
        if scale is None:
            raise ValueError(
                f"{data.dtype} imagery needs a per-band scale (percentile_scale of an overview)"
            )
        lo = scale[colour, 0].reshape(3, 1, 1)
        hi = scale[colour, 1].reshape(3, 1, 1)
        scaled = (data.astype(np.float32) - lo.astype(np.float32)) * (255.0 / (hi - lo)).astype(
            np.float32
        )
        rgb = np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).round().astype(np.uint8)
    if not valid.all():
        # Fill nodata with the ImageNet mean (about zero after normalisation): no invented
        # texture; on a copy, never on the caller's array.
        if np.shares_memory(rgb, array):
            rgb = rgb.copy()
        fill = np.asarray(_mean_uint8(), dtype=np.uint8).reshape(3, 1)
        rgb[:, ~valid] = fill
    return rgb, valid


def colour_bands(count: int, *, alpha_band: int | None = None) -> list[int]:
    """Indices of the bands used as R, G, B (grey replicated; alpha and extra bands dropped)."""
    colour = [b for b in range(count) if b != alpha_band]
    if not colour:
        raise ValueError("no colour band left after removing the alpha band")
    return colour[:3] if len(colour) >= 3 else colour[:1] * 3


def valid_pixels(
    array: np.ndarray, *, nodata: float | None = None, alpha_band: int | None = None
) -> np.ndarray:
    """Validity mask of a ``(bands, rows, cols)`` array: False where alpha == 0, where every
    colour band equals ``nodata``, or where a colour band is not finite (float data)."""
    valid = np.ones(array.shape[1:], dtype=bool)
    if alpha_band is not None:
        valid &= array[alpha_band] != 0
    data = _bands(array, sorted(set(colour_bands(array.shape[0], alpha_band=alpha_band))))
    if nodata is not None and not np.isnan(nodata):
        valid &= ~np.all(data == nodata, axis=0)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.all(np.isfinite(data), axis=0)
    return valid


def _bands(array: np.ndarray, indices: list[int]) -> np.ndarray:
    """``array[indices]``, as a view (no copy of the tile) when the bands are consecutive."""
    if indices == list(range(indices[0], indices[0] + len(indices))):
        return array[indices[0] : indices[0] + len(indices)]
    return array[indices]


def _mean_uint8(mean: Sequence[float] = (0.485, 0.456, 0.406)) -> list[int]:
    return [int(round(m * 255)) for m in mean]
