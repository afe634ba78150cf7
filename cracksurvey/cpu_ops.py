"""The network's memory-bound operations on bf16 channels-last maps on the CPU, compiled (numba).

Each gives PyTorch's values bit for bit, runs only where it applies (CPU, bf16, channels-last,
no autograd) and falls back to PyTorch everywhere else (fp32, training, a GPU). Measured on a
1280 x 1280 tile of the shipped 1/8-width model, one thread, AMD Zen 5 (docs/performance.md,
"Model"):

- **Bilinear 2x upsampling** (:func:`bilinear_up2`). The UNet16 decoder upsamples every stage
  by two (``align_corners=False``). PyTorch's bf16 kernel took 37 ms of a 263 ms forward, most
  of it on the last stage's 24 x 1280 x 1280 output (its fp32 kernel is more than twice as fast
  on the same data). This one computes each output in fp32 as PyTorch's does (the two-tap
  weights 0.25 and 0.75 in the same order, rows first, no fused multiply-add) and rounds to
  bf16 to nearest even: 19 ms.
- **2 x 2 max pooling** (:func:`max_pool2`). PyTorch's kernel also computes the indices of the
  maxima, which inference does not need: the five pools took 13.3 ms (9.9 on the first stage's
  8 x 1280 x 1280 map); this one 5.6 ms. It picks the same element (the first maximum in
  row-major order, NaN if any is NaN). (An fp32 version saved nothing in the fp32 forward.)
- **The input** (:func:`normalised_input`, bf16 and fp32). A uint8 RGB tile becomes the
  normalised channels-last input in one pass through a 3 x 256 table instead of a conversion,
  a multiply and an add over the whole tile and, in bf16, autocast's copy of it to bf16
  (8.7 -> 2.8 ms): the table holds exactly those values.

- **Convolution + ReLU** (:func:`conv_relu`, bf16 and fp32): oneDNN's convolution with the ReLU as its
  post-op (PyTorch's own fused operation, which eager mode does not use) instead of a second
  pass over every convolution's output.

``CRACKSURVEY_COMPILED_OPS=0`` in the environment (read at import, so also by Dask workers
started after it is set) switches them all off: PyTorch's operations, the same values, for a
comparison of speed (``workflows/bench_compiled_ops.py``) or should a kernel ever misbehave.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit
from numpy.typing import NDArray
from torch import nn

__all__ = [
    "ENABLED",
    "bilinear_up2",
    "conv_relu",
    "max_pool2",
    "normalised_input",
    "pytorch_ops",
]

#: The kernels run (``CRACKSURVEY_COMPILED_OPS`` is not ``0``).
ENABLED = os.environ.get("CRACKSURVEY_COMPILED_OPS", "1").strip() != "0"


@njit(cache=True, fastmath=False, boundscheck=False)
def _up2_bf16(x: NDArray[np.uint16], out: NDArray[np.uint16]) -> None:  # pragma: no cover
    """``out`` (2H, 2W, C) = bilinear 2x of ``x`` (H, W, C), both bf16 bit patterns.

    Rows are widened to fp32 one at a time (three kept), blended vertically into the two
    output rows of input row ``i`` (``0.25 x[i-1] + 0.75 x[i]`` and ``0.75 x[i] + 0.25
    x[i+1]``, the edge rows copied), then horizontally the same way, then rounded.
    """
    h_in, w_in, ch = x.shape
    q, h = np.float32(0.25), np.float32(0.75)
    rows = np.empty((3, w_in, ch), np.float32)
    rows_bits = rows.view(np.uint32)
    t = np.empty((2, w_in, ch), np.float32)
    o = np.empty((2, 2 * w_in, ch), np.float32)
    o_bits = o.view(np.uint32)
    one, sh, half = np.uint32(1), np.uint32(16), np.uint32(0x7FFF)
    exp_mask, abs_mask, qnan = np.uint32(0x7F800000), np.uint32(0x7FFFFFFF), np.uint16(0x7FC0)
    for j in range(w_in):
        for c in range(ch):
            rows_bits[0, j, c] = np.uint32(x[0, j, c]) << sh
    for i in range(h_in):
        cur, prv, nxt = i % 3, (i + 2) % 3, (i + 1) % 3
        if i + 1 < h_in:
            for j in range(w_in):
                for c in range(ch):
                    rows_bits[nxt, j, c] = np.uint32(x[i + 1, j, c]) << sh
        if i == 0:
            t[0] = rows[cur]
        else:
            for j in range(w_in):
                for c in range(ch):
                    t[0, j, c] = q * rows[prv, j, c] + h * rows[cur, j, c]
        if i == h_in - 1:
            t[1] = rows[cur]
        else:
            for j in range(w_in):
                for c in range(ch):
                    t[1, j, c] = h * rows[cur, j, c] + q * rows[nxt, j, c]
        for a in range(2):
            for c in range(ch):
                o[a, 0, c] = t[a, 0, c]
                o[a, 2 * w_in - 1, c] = t[a, w_in - 1, c]
            for j in range(1, w_in):
                for c in range(ch):
                    o[a, 2 * j, c] = q * t[a, j - 1, c] + h * t[a, j, c]
                    o[a, 2 * j - 1, c] = h * t[a, j - 1, c] + q * t[a, j, c]
            for j in range(2 * w_in):
                for c in range(ch):
                    b = o_bits[a, j, c]
                    r = np.uint16((b + half + ((b >> sh) & one)) >> sh)  # to nearest even
                    out[2 * i + a, j, c] = qnan if (b & abs_mask) > exp_mask else r


@njit(cache=True, fastmath=False, boundscheck=False)
def _pool2_bf16(x: NDArray[np.uint16], out: NDArray[np.uint16]) -> None:  # pragma: no cover
    """``out`` (H // 2, W // 2, C) = 2 x 2 max pool (stride 2, floor) of ``x`` (H, W, C), bf16
    bit patterns; the first maximum in row-major order, or the last NaN (PyTorch's rule).

    The two input rows are widened to fp32, compared there, and the winner's bits narrowed
    back (exact: a widened bf16 has no low bits).
    """
    h_out, w_out, ch = out.shape
    sh = np.uint32(16)
    rows = np.empty((2, 2 * w_out, ch), np.float32)
    rows_bits = rows.view(np.uint32)
    best = np.empty((w_out, ch), np.float32)
    best_bits = best.view(np.uint32)
    for i in range(h_out):
        for a in range(2):
            for j in range(2 * w_out):
                for c in range(ch):
                    rows_bits[a, j, c] = np.uint32(x[2 * i + a, j, c]) << sh
        for j in range(w_out):
            for c in range(ch):
                m = rows[0, 2 * j, c]
                f = rows[0, 2 * j + 1, c]
                m = f if (f > m or f != f) else m
                f = rows[1, 2 * j, c]
                m = f if (f > m or f != f) else m
                f = rows[1, 2 * j + 1, c]
                m = f if (f > m or f != f) else m
                best[j, c] = m
        for j in range(w_out):
            for c in range(ch):
                out[i, j, c] = np.uint16(best_bits[j, c] >> sh)


@njit(cache=True, boundscheck=False)
def _lookup_hwc(
    rgb: NDArray[np.uint8], lut: NDArray[Any], out: NDArray[Any]
) -> None:  # pragma: no cover
    """``out[h, w, c] = lut[c, rgb[c, h, w]]``: planar uint8 to interleaved values."""
    ch, rows, cols = rgb.shape
    for r in range(rows):
        for q in range(cols):
            for c in range(ch):
                out[r, q, c] = lut[c, rgb[c, r, q]]


def normalised_input(
    rgb: NDArray[np.uint8], mean: Sequence[float], std: Sequence[float], dtype: torch.dtype
) -> torch.Tensor:
    """The network's input for a uint8 tile: ``(rgb - 255 mean) / (255 std)``, channels-last.

    The values are those of ``x.float().mul_(1 / s).add_(-m / s)`` (``s = 255 std``,
    ``m = 255 mean``, float32, as :func:`cracksurvey.predict.predict_tile` computed them), in
    ``dtype`` float32 or bfloat16 (rounded to nearest even, as autocast's cast).

    Parameters
    ----------
    rgb : ndarray of shape (3, H, W), uint8
    mean, std : per channel, of the 0-1 scale (the model card's).
    dtype : torch.float32 or torch.bfloat16

    Returns
    -------
    Tensor of shape (1, 3, H, W), channels-last.
    """
    bands, rows, cols = rgb.shape
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1) * 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1) * 255.0
    levels = torch.arange(256, dtype=torch.float32).view(1, 256).expand(bands, 256)
    table = (levels * (1.0 / s) + (-m / s)).to(dtype).contiguous()
    out = torch.empty((1, bands, rows, cols), dtype=dtype, memory_format=torch.channels_last)
    hwc = out.permute(0, 2, 3, 1)[0]
    if dtype == torch.bfloat16:
        _lookup_hwc(np.ascontiguousarray(rgb), _bits(table), _bits(hwc))
    else:
        _lookup_hwc(np.ascontiguousarray(rgb), table.numpy(), hwc.numpy())
    return out


@contextmanager
def pytorch_ops() -> Iterator[None]:
    """Within: PyTorch's own operations (e.g. for forward hooks on the convolutions, which the
    fused convolution bypasses). Not thread-safe: it flips the module's switch."""
    global ENABLED
    before = ENABLED
    ENABLED = False
    try:
        yield
    finally:
        ENABLED = before


def _fast_path(x: torch.Tensor, dtypes: tuple[torch.dtype, ...] = (torch.bfloat16,)) -> bool:
    return (
        ENABLED
        and x.device.type == "cpu"
        and x.dtype in dtypes
        and x.dim() == 4
        and x.shape[2] > 0
        and x.shape[3] > 0
        and not (torch.is_grad_enabled() and x.requires_grad)
        and x.is_contiguous(memory_format=torch.channels_last)
        and x.permute(0, 2, 3, 1).is_contiguous()
    )


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)``.

    With a CPU bf16 channels-last input outside autograd, the compiled kernel (the same
    values, bit for bit, without the indices); otherwise PyTorch's.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)

    Returns
    -------
    Tensor of shape (N, C, H // 2, W // 2), channels-last where the input was.
    """
    if not _fast_path(x) or x.shape[2] < 2 or x.shape[3] < 2:
        return F.max_pool2d(x, 2)
    return _per_image(_pool2_bf16, x, x.shape[2] // 2, x.shape[3] // 2)


def _bits(t: torch.Tensor) -> NDArray[np.uint16]:
    """A (H, W, C) bf16 tensor's memory as uint16 (no copy)."""
    return t.view(torch.int16).numpy().view(np.uint16)


def _per_image(kernel: Any, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A new bf16 channels-last ``(N, C, rows, cols)`` tensor filled by ``kernel(src, dst)``
    image by image, both as ``(H, W, C)`` bit patterns."""
    n, c = x.shape[:2]
    out = torch.empty((n, c, rows, cols), dtype=torch.bfloat16, memory_format=torch.channels_last)
    src, dst = x.detach().permute(0, 2, 3, 1), out.permute(0, 2, 3, 1)
    for k in range(n):
        kernel(_bits(src[k]), _bits(dst[k]))
    return out


def bilinear_up2(x: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)``.

    With a CPU bf16 channels-last input outside autograd, the compiled kernel (the same
    values, bit for bit, in about half the time); otherwise PyTorch's.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)

    Returns
    -------
    Tensor of shape (N, C, 2H, 2W), channels-last where the input was.
    """
    if not _fast_path(x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    return _per_image(_up2_bf16, x, 2 * x.shape[2], 2 * x.shape[3])


#: Precisions whose fused operation raised once (missing from this build of PyTorch, or, for
#: bf16, a CPU without AVX-512 BW/VL/DQ or AVX-NE-CONVERT: oneDNN's bf16 convolution needs
#: them); those use PyTorch's own operations from then on, the others keep the fused one.
_FUSED_FAILED: set[torch.dtype] = set()


def _autocast_bf16() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def conv_relu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``relu(conv(x))``, the ReLU fused into oneDNN's convolution where it applies.

    On the CPU with a channels-last input outside autograd — bf16 under bf16 autocast (the
    weights and bias cast to bf16, as autocast casts them), or float32 without autocast — the
    convolution runs with the ReLU as a post-op of the same primitive: no second pass over the
    output (the ReLUs took 16 ms of a 1280 x 1280 tile's bf16 forward), the same values.
    Elsewhere, or if the fused operation is missing from this build of PyTorch or fails on this
    CPU in that precision (bf16 on a CPU with AVX2 only), ``F.relu(conv(x), inplace=True)``.
    """
    if (
        not _fast_path(x, (torch.bfloat16, torch.float32))
        or conv.padding_mode != "zeros"
        or isinstance(conv.padding, str)
        or (torch.is_grad_enabled() and conv.weight.requires_grad)
    ):
        return F.relu(conv(x), inplace=True)
    if x.dtype == torch.bfloat16 and _autocast_bf16():
        dtype = torch.bfloat16
    elif (
        x.dtype == torch.float32
        and conv.weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    ):
        dtype = torch.float32
    else:
        return F.relu(conv(x), inplace=True)
    if dtype in _FUSED_FAILED:
        return F.relu(conv(x), inplace=True)
    try:
        return _fused_conv_relu(conv, x, dtype)
    except (AttributeError, RuntimeError, NotImplementedError):  # not on this build or CPU
        _FUSED_FAILED.add(dtype)  # PyTorch's own operations from now on, in this precision
        return F.relu(conv(x), inplace=True)


def _fused_conv_relu(conv: nn.Conv2d, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    weight = conv.weight.to(dtype)
    bias = None if conv.bias is None else conv.bias.to(dtype)
    padding, stride, dilation = (list(v) for v in (conv.padding, conv.stride, conv.dilation))
    out: torch.Tensor = torch.ops.mkldnn._convolution_pointwise(
        x, weight, bias, padding, stride, dilation, conv.groups, "relu", [], ""
    )
    return out
