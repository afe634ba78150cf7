"""Precision: one switch for the whole suite, bf16 exercised on every CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cracksurvey import predict
from cracksurvey.model import ModelCard, TernausNet
from cracksurvey.predict import PRECISION_ENV, auto_precision, effective_precision, predict_tile


def test_environment_switch_decides_auto(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert auto_precision("cpu") == "bf16" and effective_precision("auto") == "bf16"
    monkeypatch.setenv(PRECISION_ENV, "FP32")
    assert effective_precision("auto") == "fp32"
    # an explicit setting is not overridden
    assert effective_precision("bf16") == "bf16"
    monkeypatch.setenv(PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match=PRECISION_ENV):
        auto_precision("cpu")
    monkeypatch.delenv(PRECISION_ENV)
    assert auto_precision("cpu") in ("bf16", "fp32")


@pytest.mark.parametrize(
    "vendor, native_bf16, amx, expected",
    [
        ("GenuineIntel", True, True, "bf16"),  # AMX: about 2x fp32
        ("GenuineIntel", True, False, "fp32"),  # AVX-512 BF16 without AMX: 0.6x
        ("AuthenticAMD", True, False, "bf16"),  # Zen 5: 1.5x
        ("AuthenticAMD", False, False, "fp32"),  # Zen 3: emulated
        ("", False, False, "fp32"),
    ],
)
def test_auto_is_bf16_where_it_was_measured_faster(monkeypatch, vendor, native_bf16, amx, expected):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    monkeypatch.setattr(predict, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(predict, "cpu_bf16_supported", lambda: native_bf16)
    monkeypatch.setattr(predict, "cpu_amx_supported", lambda: amx)
    assert auto_precision("cpu") == expected
    assert predict.cpu_vendor() == vendor


def test_cpu_vendor_reads_this_machine():
    info = Path("/proc/cpuinfo")
    text = info.read_text(errors="replace") if info.exists() else ""
    if "vendor_id" not in text:
        pytest.skip("no vendor_id in /proc/cpuinfo on this machine")
    assert predict.cpu_vendor() and f": {predict.cpu_vendor()}" in text


def test_explicit_bf16_runs_bf16_even_without_native_support():
    """No silent fallback to fp32: the bf16 result differs from fp32 by bf16 rounding, on any CPU."""
    torch.manual_seed(0)
    model = TernausNet("unet16", width=1 / 16, body_head=True).eval()
    card = ModelCard("t", "unet16", 1 / 16, True)
    rgb = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    d32, _ = predict_tile(model, card, rgb, precision="fp32")
    d16, _ = predict_tile(model, card, rgb, precision="bf16")
    diff = np.abs(d16 - d32)
    assert diff.max() > 0  # bf16 really ran
    assert diff.max() <= 0.05 * d32.max()  # about 1 % error on random weights


def test_a_cpu_capped_to_avx2_runs_as_an_avx2_cpu(monkeypatch):
    """`make test` reruns the CPU-dependent tests with the instruction set capped to AVX2
    (Makefile, AVX2_ONLY). The cap must take: no native bf16 in oneDNN, AVX2 kernels in torch,
    precision auto fp32. Without the cap this checks nothing and says so."""
    import os

    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() != "AVX2":
        pytest.skip("not capped to AVX2 (make test's second run caps it)")
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT")
    assert not predict.cpu_bf16_supported()
    assert auto_precision("cpu") == "fp32"
    d16, _ = predict_tile(
        TernausNet("unet16", width=1 / 16).eval(),
        ModelCard("t", "unet16", 1 / 16, False),
        np.zeros((3, 32, 32), np.uint8),
        precision="bf16",
    )
    assert np.isfinite(d16).all()  # bf16 still runs, emulated


def test_the_avx2_cap_is_read_from_the_makefile():
    """workflows/cpu_kinds.py caps the CPU with the Makefile's AVX2_ONLY (one definition)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflows"))
    import cpu_kinds

    env = cpu_kinds.avx2_only_env()
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["NUMBA_CPU_NAME"] == "haswell"  # AVX2 + FMA, runs on every x86 kind met so far
    assert "X86_V4" in env["NPY_DISABLE_CPU_FEATURES"].split()
