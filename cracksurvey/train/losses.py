"""Loss terms: MSE on the distance map, soft Dice (docs/method.md D5), TOPO, body BCE.

Soft Dice — a deviation from the authors' code, which has no gradient (D5): the crack
probability is q = sigmoid((tau - ŷ) / s) and the target tube t = 1[y <= r]; per image
dice = (2 Σ q t + 1) / (Σ q + Σ t + 1) and the loss is the batch mean of 1 - dice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .topo import TopoParams, topo_loss


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (0 switches a term off) and their constants."""

    mse: float = 1.0
    dice: float = 0.0
    topo: float = 0.0
    body: float = 0.0  # BCE of the crack-body head (only with a body head)
    dice_tau_px: float = 3.0
    dice_scale_px: float = 1.0
    dice_tube_px: float = 2.0
    topo_params: TopoParams = field(default_factory=TopoParams)


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over batch and pixels (docs/method.md, "Losses")."""
    return F.mse_loss(pred.float(), target.float())


def soft_dice_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    tau_px: float = 3.0,
    scale_px: float = 1.0,
    tube_px: float = 2.0,
) -> torch.Tensor:
    """Differentiable Dice between a crack probability derived from ŷ and the GT tube y <= r."""
    q = torch.sigmoid((tau_px - pred.float()) / scale_px)
    t = (target <= tube_px).float()
    dims = tuple(range(1, q.ndim))
    inter = (q * t).sum(dims)
    dice = (2 * inter + 1.0) / (q.sum(dims) + t.sum(dims) + 1.0)
    return (1 - dice).mean()


def body_loss(logit: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
    """Body head: binary cross-entropy plus soft Dice against the crack-body mask.

    Crack pixels are ~1-5 % of a crop, so BCE alone settles on "no crack anywhere" for a long
    time; the Dice part is insensitive to that imbalance.
    """
    logit = logit.float()
    body = body.float()
    bce = F.binary_cross_entropy_with_logits(logit, body)
    p = torch.sigmoid(logit)
    dims = tuple(range(1, p.ndim))
    dice = (2 * (p * body).sum(dims) + 1.0) / (p.sum(dims) + body.sum(dims) + 1.0)
    return bce + (1 - dice).mean()


def combined_loss(
    output: torch.Tensor, target: torch.Tensor, body: torch.Tensor | None, weights: LossWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the active terms, and each term's value for logging.

    ``output`` (B, 1 or 2, H, W): channel 0 the distance, channel 1 the body logit.
    """
    pred = output[:, :1]
    terms: dict[str, torch.Tensor] = {}
    if weights.mse:
        terms["mse"] = mse_loss(pred, target)
    if weights.dice:
        terms["dice"] = soft_dice_loss(
            pred,
            target,
            tau_px=weights.dice_tau_px,
            scale_px=weights.dice_scale_px,
            tube_px=weights.dice_tube_px,
        )
    if weights.topo:
        terms["topo"] = topo_loss(pred, target, weights.topo_params)
    if weights.body and output.shape[1] > 1 and body is not None:
        terms["body"] = body_loss(output[:, 1:2], body)
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    assert isinstance(total, torch.Tensor)
    return total, {k: float(v.detach()) for k, v in terms.items()}
