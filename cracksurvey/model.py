"""TernausNet (UNet16 / UNet11) with a width multiplier, and the model card that travels with weights.

The model (docs/method.md, "The model"): a VGG encoder (convs at torchvision's layer indices, so a torchvision
``vgg16().features`` state dict loads unchanged at width 1), a bilinear decoder (UNet16) or a
transposed-convolution decoder (UNet11), a 1x1 head and a final ReLU. The output is the clipped
distance to the crack centreline in pixels at training scale. An optional second head predicts the
crack body (a logit; sigmoid gives the probability) from which widths are measured.

Weights are safetensors; the :class:`ModelCard` (JSON beside them) carries everything inference
needs (architecture, width, normalisation, clip, calibrated threshold) and a SHA-256 of the weights
that is verified at load time. :func:`read_weights` reads a weights file once into
:class:`Weights` (its bytes and card): what the engine sends to its workers, which build the
network from the bytes (:func:`model_from_bytes`), so no shared filesystem is needed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_ops import bilinear_up2, conv_relu, max_pool2, pytorch_ops
from .errors import ModelError

log = logging.getLogger(__name__)

Architecture = Literal["unet16", "unet11"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (out_channels per conv, stage boundaries) of the VGG encoders, at width 1.
# Each inner list is one encoder stage (a max-pool precedes every stage but the first).
_VGG_STAGES: dict[str, list[list[int]]] = {
    "unet16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "unet11": [[64], [128], [256, 256], [512, 512], [512, 512]],
}
# torchvision vgg*.features indices of the convs, in order (for state-dict compatibility).
_VGG_CONV_INDICES = {
    "unet16": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
    "unet11": [0, 3, 6, 8, 11, 13, 16, 18],
}

SHIPPED_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL_ID = "cracksurvey-unet16w0125-facade"


def _c(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


Norm = Literal["none", "batch"]


def _norm(channels: int, norm: Norm) -> nn.Module:
    return nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()


class _ConvRelu(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: Norm = "none") -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1), _norm(cout, norm), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm = self[0], self[1]
        if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.Identity):  # ReLU fused if it can
            return conv_relu(conv, x)
        return super().forward(x)


class _DecoderV2(nn.Module):
    """UNet16 decoder block (bilinear mode): upsample x2, then conv+ReLU twice."""

    def __init__(self, cin: int, cmid: int, cout: int, norm: Norm = "none") -> None:
        super().__init__()
        self.block = nn.Sequential(_ConvRelu(cin, cmid, norm), _ConvRelu(cmid, cout, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(bilinear_up2(x))


class _DecoderV1(nn.Module):
    """UNet11 decoder block: conv+ReLU, transposed conv (k3 s2 p1 op1), ReLU."""

    def __init__(self, cin: int, cmid: int, cout: int, norm: Norm = "none") -> None:
        super().__init__()
        self.block = nn.Sequential(
            _ConvRelu(cin, cmid, norm),
            nn.ConvTranspose2d(cmid, cout, 3, stride=2, padding=1, output_padding=1),
            _norm(cout, norm),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class TernausNet(nn.Module):
    """UNet16 (paper) or UNet11 with a channel-width multiplier.

    Parameters
    ----------
    architecture : {'unet16', 'unet11'}
    width : float
        Channel multiplier; 1.0 is the paper's network (29.3 M parameters for UNet16).
    body_head : bool
        Add a second 1x1 head predicting the crack-body logit (used to measure width).
    classes : int
        0 (default): the crack network (distance head). ``k > 0``: a segmentation network with
        ``k`` class logits and no final ReLU (the façade-semantics model).
    norm : {'none', 'batch'}
        'none' is TernausNet as published (ImageNet-initialised VGG encoder). 'batch' adds
        BatchNorm after every conv: our deviation for training from scratch, where a deep
        VGG-style stack without normalisation learns very slowly.

    Weights are He-initialised (fan-in, ReLU gain) so the signal does not vanish through the
    ~20 conv layers when training from scratch (PyTorch's default init shrinks it per layer).

    Input ``(N, 3, H, W)`` normalised RGB with H, W multiples of 32. Output ``(N, 1 or 2, H, W)``:
    channel 0 the distance in pixels (>= 0, final ReLU), channel 1 the body logit if present.
    """

    def __init__(
        self,
        architecture: Architecture = "unet16",
        *,
        width: float = 1.0,
        body_head: bool = False,
        norm: Norm = "none",
        classes: int = 0,
    ) -> None:
        super().__init__()
        self.norm = norm
        self.classes = classes
        if classes and body_head:
            raise ModelError("a class-logit network (classes > 0) has no body head")
        if architecture not in _VGG_STAGES:
            raise ModelError(f"unknown architecture {architecture!r}; expected unet16 or unet11")
        self.architecture = architecture
        self.width = width
        self.body_head = body_head
        stages = [[_c(c, width) for c in stage] for stage in _VGG_STAGES[architecture]]
        # Encoder as a flat Sequential whose conv indices match torchvision's vgg features.
        layers: dict[int, nn.Conv2d] = {}
        cin = 3
        flat = [c for stage in stages for c in stage]
        for idx, cout in zip(_VGG_CONV_INDICES[architecture], flat, strict=True):
            layers[idx] = nn.Conv2d(cin, cout, 3, padding=1)
            cin = cout
        n = max(layers) + 1
        self.encoder = nn.Sequential(*[layers.get(i, nn.Identity()) for i in range(n)])
        self.encoder_norms = nn.ModuleDict(
            {str(i): _norm(conv.out_channels, norm) for i, conv in layers.items()}
        )
        self._stage_convs: list[list[int]] = []
        it = iter(_VGG_CONV_INDICES[architecture])
        for stage in stages:
            self._stage_convs.append([next(it) for _ in stage])
        e = [stage[-1] for stage in stages]  # channels out of each encoder stage
        nf = _c(32, width)
        if architecture == "unet16":
            dec = _DecoderV2
            self.center = dec(e[4], nf * 16, nf * 8, norm)
            self.dec5 = dec(e[4] + nf * 8, nf * 16, nf * 8, norm)
            self.dec4 = dec(e[3] + nf * 8, nf * 16, nf * 8, norm)
            self.dec3 = dec(e[2] + nf * 8, nf * 8, nf * 2, norm)
            self.dec2 = dec(e[1] + nf * 2, nf * 4, nf, norm)
        else:
            dec = _DecoderV1  # type: ignore[assignment]
            self.center = dec(e[4], nf * 16, nf * 8, norm)
            self.dec5 = dec(e[4] + nf * 8, nf * 16, nf * 8, norm)
            self.dec4 = dec(e[3] + nf * 8, nf * 16, nf * 4, norm)
            self.dec3 = dec(e[2] + nf * 4, nf * 8, nf * 2, norm)
            self.dec2 = dec(e[1] + nf * 2, nf * 4, nf, norm)
        self.dec1 = _ConvRelu(e[0] + nf, nf, norm)
        self.final = nn.Conv2d(nf, classes or 1, 1)
        self.body = nn.Conv2d(nf, 1, 1) if body_head else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _stage(self, x: torch.Tensor, k: int) -> torch.Tensor:
        for idx in self._stage_convs[k]:
            conv, norm = self.encoder[idx], self.encoder_norms[str(idx)]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.Identity):
                x = conv_relu(conv, x)
            else:
                x = F.relu(norm(conv(x)), inplace=True)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = max_pool2
        conv1 = self._stage(x, 0)
        conv2 = self._stage(pool(conv1), 1)
        conv3 = self._stage(pool(conv2), 2)
        conv4 = self._stage(pool(conv3), 3)
        conv5 = self._stage(pool(conv4), 4)
        center = self.center(pool(conv5))
        dec5 = self.dec5(torch.cat([center, conv5], 1))
        dec4 = self.dec4(torch.cat([dec5, conv4], 1))
        dec3 = self.dec3(torch.cat([dec4, conv3], 1))
        dec2 = self.dec2(torch.cat([dec3, conv2], 1))
        dec1 = self.dec1(torch.cat([dec2, conv1], 1))
        if self.classes:
            return self.final(dec1)  # class logits
        distance = F.relu(self.final(dec1))
        if self.body is None:
            return distance
        return torch.cat([distance, self.body(dec1)], 1)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_megapixel(model: TernausNet) -> float:
    """Multiply-add FLOPs (2 per MAC) of one forward pass per megapixel of input.

    Counted analytically from the conv layers and the resolution each runs at.
    """
    side = 256
    total = 0.0
    hooks = []

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.ConvTranspose2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            total += (
                2.0 * inp[0].shape[-1] * inp[0].shape[-2] * k * mod.in_channels * mod.out_channels
            )
        elif isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            total += 2.0 * out.shape[-1] * out.shape[-2] * k * mod.in_channels * mod.out_channels

    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad(), pytorch_ops():  # every convolution through its module's hooks
            model(torch.zeros(1, 3, side, side))
    finally:
        for h in hooks:
            h.remove()
    return total / (side * side) * 1e6


@dataclass(frozen=True)
class ModelCard:
    """Everything inference needs to use a set of weights, plus their provenance.

    Attributes
    ----------
    model_id : str
    architecture : {'unet16', 'unet11'}
    width : float
        Channel multiplier of :class:`TernausNet`.
    body_head : bool
    clip_px : float
        Training targets were clipped at this distance (pixels).
    threshold_px : float
        Calibrated threshold: crack = predicted distance <= threshold_px.
    mean, std : tuple of 3 floats
        Input normalisation of RGB in [0, 1].
    input_multiple : int
        Input height and width must be multiples of this.
    sha256 : str
        SHA-256 of the safetensors file.
    lineage : dict
        Where fine-tuned weights come from (empty for a model trained from scratch): the
        parent model's id and SHA-256, the edited surveys the samples came from, and the
        sample counts (:func:`cracksurvey.train.finetune.finetune_from_surveys`). Cards
        written before this field existed load with an empty lineage.
    """

    model_id: str
    architecture: Architecture
    width: float
    body_head: bool
    norm: Norm = "none"
    clip_px: float = 20.0
    threshold_px: float = 4.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_multiple: int = 32
    output: str = "distance_px (channel 0, >=0); body logit (channel 1) if body_head"
    classes: tuple[str, ...] = ()  # non-empty: a class-logit network (façade semantics)
    sha256: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    training_data: list[dict[str, Any]] = field(default_factory=list)
    licence: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ModelError(
                f"model card has unknown keys {sorted(unknown)}; expected {sorted(names)}"
            )
        d = dict(d)
        for key in ("mean", "std", "classes"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def build_model(card: ModelCard) -> TernausNet:
    """An untrained :class:`TernausNet` with the architecture a card describes."""
    return TernausNet(
        card.architecture,
        width=card.width,
        body_head=card.body_head,
        norm=card.norm,
        classes=len(card.classes),
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(model: TernausNet, card: ModelCard, path: str | Path) -> ModelCard:
    """Write ``<path>.safetensors`` and ``<path>.json``; return the card with its checksum.

    ``path`` may be given with or without the ``.safetensors`` suffix.
    """
    from safetensors.torch import save_file

    if card.norm == "batch" and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        raise ModelError(
            f"{card.model_id}: the model's BatchNorm was folded for inference; save the unfolded "
            "model (load_model(..., fold_bn=False))"
        )
    weights = Path(path).with_suffix(".safetensors")
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = weights.with_suffix(".safetensors.tmp")
    save_file(state, str(tmp), metadata={"model_id": card.model_id})
    tmp.replace(weights)
    card = dataclasses.replace(card, sha256=sha256_file(weights))
    card_tmp = weights.with_suffix(".json.tmp")
    card_tmp.write_text(card.to_json())
    card_tmp.replace(weights.with_suffix(".json"))
    return card


def default_weights_path() -> Path:
    """The shipped default model's safetensors file."""
    return SHIPPED_DIR / f"{DEFAULT_MODEL_ID}.safetensors"


def read_card(path: str | Path) -> ModelCard:
    """Read the model card beside a safetensors file (``<stem>.json``)."""
    card_path = Path(path).with_suffix(".json")
    if not card_path.exists():
        raise ModelError(f"{card_path}: model card not found; weights need their card beside them")
    try:
        return ModelCard.from_dict(json.loads(card_path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelError(f"{card_path}: not a valid model card ({exc})") from exc


@dataclass(frozen=True, eq=False)
class Weights:
    """The content of a weights file and its card, read once (:func:`read_weights`).

    Attributes
    ----------
    data : bytes
        The safetensors file, checked against ``card.sha256``.
    card : ModelCard
    source : str
        Where the bytes came from (error messages).
    """

    data: bytes = field(repr=False)
    card: ModelCard
    source: str = "weights"


def read_weights(path: str | Path | None = None, *, verify: bool = True) -> Weights:
    """Read a ``.safetensors`` file and its card, and check the checksum.

    Parameters
    ----------
    path : path to a ``.safetensors`` file (the suffix may be omitted), or None for the shipped
        default model.
    verify : check the SHA-256 of the bytes against the card.

    Raises
    ------
    ModelError
        No such file, no card, or a checksum that does not match the card.
    """
    weights = Path(path) if path is not None else default_weights_path()
    weights = weights.with_suffix(".safetensors")
    if not weights.exists():
        if path is None:
            raise ModelError(
                f"no default model is shipped yet ({weights} is missing); pass --weights PATH "
                "to a .safetensors file with its .json model card (cracksurvey train writes one)"
            )
        raise ModelError(
            f"{weights}: weights file not found; pass --weights PATH to a .safetensors file"
        )
    card = read_card(weights)
    data = weights.read_bytes()
    if verify and card.sha256:
        _check_sha256(data, card, str(weights))
    return Weights(data, card, str(weights))


def _check_sha256(data: bytes, card: ModelCard, source: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != card.sha256:
        raise ModelError(
            f"{source}: checksum {digest[:12]}… does not match the card's {card.sha256[:12]}…; "
            "the file is corrupt or belongs to another card"
        )


def load_model(
    path: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    verify: bool = True,
    fold_bn: bool = True,
) -> tuple[TernausNet, ModelCard]:
    """Load weights and their card; verify the checksum and that the weights fit the architecture.

    Parameters
    ----------
    path : path to a ``.safetensors`` file, or None for the shipped default model.
    device : torch device to place the model on.
    verify : check the SHA-256 against the card.
    fold_bn : fold BatchNorm into the convolutions (:func:`fold_batchnorm`): faster inference,
        same outputs; pass False to get a model that can be trained further.

    Returns
    -------
    (model in eval mode, card)
    """
    weights = read_weights(path, verify=verify)
    model = model_from_bytes(
        weights.data,
        weights.card,
        device=device,
        verify=False,
        source=weights.source,
        fold_bn=fold_bn,
    )
    return model, weights.card


def model_from_bytes(
    data: bytes,
    card: ModelCard,
    *,
    device: str | torch.device = "cpu",
    verify: bool = True,
    source: str = "weights",
    fold_bn: bool = True,
) -> TernausNet:
    """Build the card's network from the bytes of a ``.safetensors`` file (no file needed).

    This is how weights reach Dask workers on other machines: the bytes travel once per worker.

    Parameters
    ----------
    data : content of the safetensors file.
    card : its model card.
    device : torch device to place the model on.
    verify : check the SHA-256 of ``data`` against the card.
    source : name used in error messages (the file the bytes came from).
    fold_bn : fold BatchNorm into the convolutions (:func:`fold_batchnorm`, inference only).

    Raises
    ------
    ModelError
        Checksum mismatch, unreadable bytes, or weights that do not fit the architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    if verify and card.sha256:
        _check_sha256(data, card, source)
    model = build_model(card)
    try:
        state = load(data)
    except SafetensorError as exc:
        raise ModelError(f"{source}: not a readable safetensors file ({exc})") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(
            f"{source}: weights do not match the card's architecture "
            f"({card.architecture}, width {card.width}, body_head {card.body_head}): {first}"
        ) from exc
    model.eval().to(device)
    return fold_batchnorm(model) if fold_bn else model


def fold_batchnorm(model: TernausNet) -> TernausNet:
    """Fold every eval-mode BatchNorm into the convolution before it (in place), for inference.

    ``conv -> BN`` becomes one conv with scaled weights and a shifted bias; the BN becomes an
    Identity. Same outputs up to float rounding (tested), one pass less over every activation:
    BatchNorm was about a fifth of the forward time on the CPU. Do not train the result.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ModelError("fold_batchnorm needs a model in eval mode (running statistics)")
    for idx, norm in model.encoder_norms.items():
        conv = model.encoder[int(idx)]
        if isinstance(norm, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d):
            model.encoder[int(idx)] = fuse_conv_bn_eval(conv, norm)
            model.encoder_norms[idx] = nn.Identity()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, norm = seq[i], seq[i + 1]
            if isinstance(norm, nn.BatchNorm2d) and isinstance(
                conv, nn.Conv2d | nn.ConvTranspose2d
            ):
                seq[i] = fuse_conv_bn_eval(
                    conv, norm, transpose=isinstance(conv, nn.ConvTranspose2d)
                )
                seq[i + 1] = nn.Identity()
    return model


def load_imagenet_encoder(model: TernausNet) -> None:
    """Initialise the encoder from torchvision's ImageNet VGG weights (optional extra).

    Only possible at width 1 (the ImageNet weights have the paper's channel counts) and when the
    torchvision weights can be had (a download or a local torch hub cache).
    """
    if model.width != 1.0:
        raise ModelError("ImageNet initialisation needs width 1.0 (the VGG channel counts)")
    try:
        import torchvision  # noqa: F401
        from torchvision.models import VGG11_Weights, VGG16_Weights, vgg11, vgg16
    except ImportError as exc:  # pragma: no cover - optional extra
        raise ModelError(
            "ImageNet initialisation needs the [imagenet] extra (torchvision)"
        ) from exc
    if model.architecture == "unet16":
        vgg = vgg16(weights=VGG16_Weights.IMAGENET1K_V1)
    else:
        vgg = vgg11(weights=VGG11_Weights.IMAGENET1K_V1)
    model.encoder.load_state_dict(
        {k: v for k, v in vgg.features.state_dict().items()}, strict=False
    )
