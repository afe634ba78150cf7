"""The compiled bf16 kernels of the network (cracksurvey.cpu_ops): bilinear 2x upsampling, 2 x 2 max pooling."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cracksurvey import cpu_ops
from cracksurvey.cpu_ops import bilinear_up2, max_pool2


def _spy(monkeypatch, name: str) -> list[tuple]:
    """Calls of ``cpu_ops.<name>`` from now on (their arguments); the function still runs."""
    calls: list[tuple] = []
    original = getattr(cpu_ops, name)

    def spy(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(cpu_ops, name, spy)
    return calls


def _bf16_cl(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * 4.0
    return x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)


def _reference(x: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x (align_corners=False) in numpy float32, rows then columns, rounded to bf16:
    the arithmetic the kernel promises, independent of PyTorch's own kernel."""
    a = x.float().numpy()
    q, h = np.float32(0.25), np.float32(0.75)

    def along(v: np.ndarray, axis: int) -> np.ndarray:
        v = np.moveaxis(v, axis, -1)
        prev = np.concatenate([v[..., :1], v[..., :-1]], axis=-1)
        nxt = np.concatenate([v[..., 1:], v[..., -1:]], axis=-1)
        even = q * prev + h * v
        odd = h * v + q * nxt
        even[..., 0] = v[..., 0]
        odd[..., -1] = v[..., -1]
        out = np.stack([even, odd], axis=-1).reshape(*v.shape[:-1], 2 * v.shape[-1])
        return np.moveaxis(out, -1, axis)

    y = along(along(a, 2), 3)
    return torch.from_numpy(np.ascontiguousarray(y)).to(torch.bfloat16)


@pytest.mark.parametrize(
    "shape",
    [(1, 24, 37, 41), (2, 16, 8, 8), (1, 3, 1, 5), (1, 5, 6, 1), (1, 1, 1, 1), (1, 64, 20, 20)],
)
def test_the_kernel_computes_the_promised_arithmetic_bit_for_bit(shape):
    x = _bf16_cl(shape)
    with torch.inference_mode():
        y = bilinear_up2(x)
    assert y.shape == (shape[0], shape[1], 2 * shape[2], 2 * shape[3])
    assert y.dtype == torch.bfloat16
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y.contiguous().view(torch.int16), _reference(x).view(torch.int16))


@pytest.mark.parametrize("shape", [(1, 24, 40, 40), (2, 8, 13, 7)])
def test_the_kernel_agrees_with_torch_interpolate(shape):
    """PyTorch's kernel on this CPU: equal, or at most one bf16 step apart (the order of its
    arithmetic may differ between CPU kinds; on an AMD Zen 5 every value is identical)."""
    x = _bf16_cl(shape, seed=1)
    with torch.inference_mode():
        ours = bilinear_up2(x).float()
        theirs = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).float()
    step = theirs.abs() * 2.0**-7 + 1e-30
    assert bool(((ours - theirs).abs() <= step).all())
    assert float((ours != theirs).float().mean()) < 0.01


def test_the_kernel_keeps_nan_and_infinity():
    x = _bf16_cl((1, 4, 5, 6))
    x[0, 1, 2, 3] = float("nan")
    x[0, 2, 0, 0] = float("inf")
    with torch.inference_mode():
        y = bilinear_up2(x)
        ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.equal(torch.isnan(y), torch.isnan(ref))
    assert torch.equal(torch.isinf(y), torch.isinf(ref))


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(1, 8, 9, 10),  # fp32
        lambda: torch.randn(1, 8, 9, 10).to(torch.bfloat16),  # bf16, NCHW
        lambda: (
            torch.randn(1, 8, 9, 10)
            .contiguous(memory_format=torch.channels_last)
            .to(torch.bfloat16)
            .requires_grad_()
        ),  # training
    ],
    ids=["fp32", "bf16-nchw", "bf16-autograd"],
)
def test_everything_else_is_torch_interpolate(make, monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_ops, "_up2_bf16", lambda *a: calls.append(a))
    x = make()
    y = bilinear_up2(x)
    assert not calls
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.equal(y, ref)
    if x.requires_grad:
        y.float().sum().backward()
        assert x.grad is not None and x.grad.shape == x.shape


def test_the_decoder_uses_it_in_inference(monkeypatch):
    from cracksurvey.model import TernausNet

    model = TernausNet("unet16", width=0.125, body_head=True, norm="batch").eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    calls = _spy(monkeypatch, "_up2_bf16")
    pools = _spy(monkeypatch, "_pool2_bf16")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = model(x)
        assert len(calls) == 5  # the five decoder stages of UNet16
        assert len(pools) == 5  # and the five pools of its encoder
        monkeypatch.setattr(cpu_ops, "_fast_path", lambda t: False)
        slow = model(x)
    assert fast.shape == slow.shape == (1, 2, 64, 64)
    # the kernel's values are torch's within one bf16 step, which the rest of the network
    # carries: compare loosely (identical on an AMD Zen 5)
    assert torch.allclose(fast.float(), slow.float(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("shape", [(1, 8, 64, 64), (2, 16, 9, 11), (1, 3, 2, 2), (1, 24, 5, 3)])
def test_the_pool_picks_torch_max_pool2d_values(shape):
    x = _bf16_cl(shape, seed=2)
    x = torch.relu(x)  # as in the network: many exact zeros, ties within a window
    x[0, 0, 0, 1] = float("nan")
    with torch.inference_mode():
        ours = max_pool2(x)
        theirs = F.max_pool2d(x, 2)
    assert ours.shape == theirs.shape
    assert ours.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(torch.isnan(ours), torch.isnan(theirs))
    finite = ~torch.isnan(theirs)
    assert torch.equal(ours[finite], theirs[finite])
    # and the maxima of the windows, computed directly
    a = x.float()[..., : 2 * (shape[2] // 2), : 2 * (shape[3] // 2)]
    blocks = a.reshape(shape[0], shape[1], shape[2] // 2, 2, shape[3] // 2, 2)
    direct = blocks.amax(dim=(3, 5))
    assert torch.equal(ours.float()[finite], direct[finite])


def test_the_pool_falls_back_outside_its_case(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_ops, "_pool2_bf16", lambda *a: calls.append(a))
    for x in (torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6).to(torch.bfloat16)):
        assert torch.equal(max_pool2(x), F.max_pool2d(x, 2))
    assert not calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_input_table_gives_the_normalised_values(dtype):
    from cracksurvey.cpu_ops import normalised_input

    rgb = np.random.default_rng(3).integers(0, 256, (3, 37, 53), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    s = torch.tensor(std).view(1, 3, 1, 1) * 255.0
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255.0
    expected = torch.from_numpy(rgb)[None].float().mul_(1.0 / s).add_(-m / s).to(dtype)
    x = normalised_input(rgb, mean, std, dtype)
    assert x.dtype == dtype and x.shape == (1, 3, 37, 53)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, expected)


def test_the_switch_turns_them_off(monkeypatch):
    monkeypatch.setattr(cpu_ops, "ENABLED", False)
    calls = []
    monkeypatch.setattr(cpu_ops, "_up2_bf16", lambda *a: calls.append(a))
    monkeypatch.setattr(cpu_ops, "_pool2_bf16", lambda *a: calls.append(a))
    x = _bf16_cl((1, 8, 6, 6))
    with torch.inference_mode():
        assert torch.equal(
            bilinear_up2(x), F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        )
        assert torch.equal(max_pool2(x), F.max_pool2d(x, 2))
    assert not calls


def test_the_switch_is_read_from_the_environment():
    code = "import cracksurvey.cpu_ops as o; print(o.ENABLED)"
    for value, expected in (("0", "False"), ("1", "True"), ("", "True")):
        env = {**os.environ, "CRACKSURVEY_COMPILED_OPS": value}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == expected


def _conv(cin: int, cout: int, seed: int = 0) -> torch.nn.Conv2d:
    torch.manual_seed(seed)
    return torch.nn.Conv2d(cin, cout, 3, padding=1).eval().to(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", [(1, 8, 33, 47), (2, 3, 16, 16), (1, 24, 64, 64)])
def test_the_fused_convolution_gives_relu_of_the_convolution(shape):
    from cracksurvey.cpu_ops import conv_relu

    conv = _conv(shape[1], 16)
    x = _bf16_cl(shape, seed=4)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours = conv_relu(conv, x)
        theirs = torch.relu(conv(x))
    assert ours.dtype == torch.bfloat16 and ours.shape == theirs.shape
    assert bool((ours >= 0).all())
    # oneDNN with and without the post-op: identical on an AMD Zen 5; allow one bf16 step, and
    # near zero the fp32 accumulation order another CPU's kernels may use (outputs are O(10))
    step = theirs.float().abs() * 2.0**-7 + 1e-3
    assert bool(((ours.float() - theirs.float()).abs() <= step).all())


def test_the_fused_convolution_falls_back_outside_its_case(monkeypatch):
    from cracksurvey.cpu_ops import conv_relu

    used = []
    monkeypatch.setattr(cpu_ops, "_fused_conv_relu", lambda *a: used.append(a))
    conv = _conv(4, 4)
    x = _bf16_cl((1, 4, 8, 8))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv_relu(conv, x.float())  # float32 input under autocast: PyTorch's rules
        assert torch.equal(y, torch.relu(conv(x.float())))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autograd: the training path
        x_grad = x.clone().requires_grad_()
        y = conv_relu(conv, x_grad)
        y.float().sum().backward()
        assert x_grad.grad is not None
    assert not used


def test_a_missing_fused_operation_falls_back_for_good(monkeypatch):
    from cracksurvey.cpu_ops import conv_relu

    def missing(*args):
        raise RuntimeError("no such operator")

    monkeypatch.setattr(cpu_ops, "_fused_conv_relu", missing)
    monkeypatch.setattr(cpu_ops, "_FUSED_FAILED", set())
    conv = _conv(4, 4)
    x = _bf16_cl((1, 4, 8, 8))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv_relu(conv, x)
        assert torch.equal(y, torch.relu(conv(x)))
    assert cpu_ops._FUSED_FAILED == {torch.bfloat16}


def test_a_failing_bf16_fusion_keeps_the_float32_one(monkeypatch):
    """oneDNN's bf16 convolution needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT: on an AVX2-only CPU
    the bf16 fusion raises, and the float32 forward must keep its fusion (it once lost it)."""
    from cracksurvey.cpu_ops import conv_relu

    real = cpu_ops._fused_conv_relu

    def bf16_unsupported(conv, x, dtype):
        if dtype == torch.bfloat16:
            raise RuntimeError("mkldnn_convolution: bf16 path needs the cpu support avx512bw")
        return real(conv, x, dtype)

    monkeypatch.setattr(cpu_ops, "_fused_conv_relu", bf16_unsupported)
    monkeypatch.setattr(cpu_ops, "_FUSED_FAILED", set())
    conv = _conv(8, 16)
    x = _bf16_cl((1, 8, 40, 24), seed=5)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(conv_relu(conv, x), torch.relu(conv(x)))
    calls = _spy(monkeypatch, "_fused_conv_relu")
    with torch.inference_mode():
        conv_relu(conv, x.float())
    assert [args[2] for args in calls] == [torch.float32]
    assert cpu_ops._FUSED_FAILED == {torch.bfloat16}


def test_the_fused_convolution_in_float32():
    from cracksurvey.cpu_ops import conv_relu

    conv = _conv(8, 16)
    x = _bf16_cl((1, 8, 40, 24), seed=5).float()
    with pytest.MonkeyPatch.context() as mp:
        calls = _spy(mp, "_fused_conv_relu")
        with torch.inference_mode():
            ours = conv_relu(conv, x)
            theirs = torch.relu(conv(x))
    assert [args[2] for args in calls] == [torch.float32]
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_the_flop_count_sees_every_convolution_of_a_channels_last_model():
    from cracksurvey.model import TernausNet, flops_per_megapixel

    model = TernausNet("unet16", width=0.125, body_head=True).eval()
    plain = flops_per_megapixel(model)
    model = model.to(memory_format=torch.channels_last)
    assert flops_per_megapixel(model) == pytest.approx(plain)
    assert plain == pytest.approx(41.2e9, rel=0.01)  # the shipped architecture's, as documented
