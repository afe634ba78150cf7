"""Precision: one switch for the whole suite, bf16 exercised on every CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
