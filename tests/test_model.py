"""TernausNet inference helpers: BatchNorm folding keeps the outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cracksurvey.errors import ModelError
from cracksurvey.model import ModelCard, TernausNet, fold_batchnorm, load_model, save_model


def _trained_like(architecture: str) -> TernausNet:
    """A BatchNorm model with non-trivial running statistics and affine parameters."""
    torch.manual_seed(0)
    model = TernausNet(architecture, width=0.125, body_head=True, norm="batch")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("architecture", ["unet16", "unet11"])
def test_folded_batchnorm_gives_the_same_outputs(architecture):
    model = _trained_like(architecture)
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        before = model(x)
        fold_batchnorm(model)
        after = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_fold_needs_eval_mode():
    with pytest.raises(ModelError, match="eval mode"):
        fold_batchnorm(TernausNet("unet16", width=0.125, norm="batch").train())


def test_load_model_folds_unless_asked_not_to(tmp_path):
    model = _trained_like("unet16")
    card = save_model(
        model, ModelCard("t", "unet16", 0.125, True, norm="batch"), tmp_path / "m.safetensors"
    )
    x = torch.randn(1, 3, 64, 64)
    folded, _ = load_model(tmp_path / "m.safetensors")
    plain, card2 = load_model(tmp_path / "m.safetensors", fold_bn=False)
    assert card2.sha256 == card.sha256
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), plain(x), rtol=1e-4, atol=1e-4)


def test_a_folded_model_cannot_be_saved_as_a_batchnorm_card(tmp_path):
    model = fold_batchnorm(_trained_like("unet16"))
    with pytest.raises(ModelError, match="folded"):
        save_model(model, ModelCard("t", "unet16", 0.125, True, norm="batch"), tmp_path / "m")
