"""Ensemble training: the N sub-models and the fusion head, fine-tuned together on all data (DeViT step 5).

    L = w_mse MSE(h, teacher CLS) + (1 - a) CE(logits, y) + a KD(logits, teacher)

where h is the fused token (mapped to the teacher's width) and the sub-model backbones train
jointly with the head, at a smaller learning rate. Our addition is device dropout: every image
independently loses each device with some probability (never all of them), and the fusion sees
the presence mask, so the ensemble keeps answering when a device is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from coinfer.core.device import model_device
from coinfer.core.errors import InvalidInput
from coinfer.core.measure import accuracy
from coinfer.core.models.vit import VisionTransformer
from coinfer.core.parallel import training_device
from coinfer.core.training import Batch, TrainConfig, TrainResult, train_loop
from coinfer.server.dekd.distill import kd_loss
from coinfer.core.models.fusion import DeViTFusion
from coinfer.server.dekd.targets import TeacherSignal, TeacherTargets, as_signal, batch_images, teacher_placed


@dataclass
class EnsembleConfig:
    """Loss weights, device dropout and schedule of ensemble training."""

    loop: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, lr=1e-3, warmup_epochs=0.3, desc="ensemble"))
    """Budget, batch size, learning rate (of the fusion head), warm-up and label smoothing."""
    backbone_lr_scale: float = 0.3
    """Learning rate of the sub-model backbones relative to the fusion head's."""
    alpha: float = 0.5
    """Weight a of the KD term; CE gets 1 - a (DeViT: 0.5)."""
    mse_weight: float = 1.0
    """Weight of MSE(h, teacher CLS token)."""
    kd_temperature: float = 1.0
    """Softmax temperature of the KD term."""
    device_dropout: float = 0.2
    """Probability that a device's feature is marked missing for a training image (0 disables)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.device_dropout < 1.0:
            raise InvalidInput(f"ensemble: device_dropout must be in [0, 1), got {self.device_dropout!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InvalidInput(f"ensemble: alpha must be in [0, 1], got {self.alpha!r}")
        if self.backbone_lr_scale < 0 or self.mse_weight < 0:
            raise InvalidInput("ensemble: backbone_lr_scale and mse_weight must be >= 0")


class DeViTEnsemble(nn.Module):
    """N head-less sub-models (each outputs its CLS feature) and the fusion head, in one module.

    For evaluation on one machine; in deployment each sub-model runs on its own device.
    """

    def __init__(self, submodels: Sequence[VisionTransformer], fusion: DeViTFusion) -> None:
        super().__init__()
        widths = tuple(m.config.embed_dim for m in submodels)
        if any(m.config.num_classes for m in submodels):
            raise InvalidInput("ensemble sub-models must have no head (num_classes 0): they send their CLS feature")
        if widths != fusion.config.feature_dims:
            raise InvalidInput(f"sub-model widths {widths} do not match the fusion head's {fusion.config.feature_dims}")
        self.submodels = nn.ModuleList(submodels)
        self.fusion = fusion

    @property
    def num_devices(self) -> int:
        """N."""
        return len(self.submodels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Every device's CLS feature, concatenated: (B, sum of widths)."""
        return torch.cat([m(x) for m in self.submodels], dim=1)

    def fuse(self, x: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fused token h, logits) with devices where ``present`` (B, N) is false marked missing."""
        return self.fusion.fuse(self.features(x), present)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """Logits; every device present unless ``present`` says otherwise."""
        if present is None:
            present = torch.ones(x.shape[0], self.num_devices, dtype=torch.bool, device=x.device)
        return self.fuse(x, present)[1]


class _TrainForward(nn.Module):
    """What DDP wraps: (h, logits) for images and a presence mask."""

    def __init__(self, ensemble: DeViTEnsemble) -> None:
        super().__init__()
        self.ensemble = ensemble

    def forward(self, x: torch.Tensor, present: torch.Tensor):
        return self.ensemble.fuse(x, present)


@torch.no_grad()
def init_fusion_from_teacher(
    ensemble: DeViTEnsemble, x: torch.Tensor, teacher_cls: torch.Tensor, teacher: VisionTransformer, ridge: float = 1e-3
) -> None:
    """Start the fusion head where training would take it: the teacher's classifier on top of the
    least-squares map from the devices' features to the teacher's CLS token, and every missing
    embedding at its device's mean feature (mean imputation).

    DeViT starts the head from random weights; this closed-form start costs one pass of the
    sub-models over ``x`` and lets the short joint training refine instead of search.
    """
    fusion = ensemble.fusion
    if teacher.config.embed_dim != fusion.config.embed_dim or teacher.config.num_classes != fusion.config.num_classes:
        raise InvalidInput("the fusion head and the teacher disagree on width or classes")
    ensemble.eval()
    device = model_device(ensemble)
    feats = torch.cat([ensemble.features(x[i : i + 256].to(device)) for i in range(0, len(x), 256)]).double()
    mean = feats.mean(dim=0)
    centred = feats - mean
    target = teacher_cls.to(device).double()
    target_mean = target.mean(dim=0)
    # Ridge regression on centred data, lambda scaled to the features' energy so it is unit-free.
    gram = centred.T @ centred
    lam = ridge * gram.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    weight = torch.linalg.solve(gram + lam * eye, centred.T @ (target - target_mean))
    fusion.map.weight.copy_(weight.T.float())
    fusion.map.bias.copy_((target_mean - mean @ weight).float())
    fusion.missing.copy_(mean.float())
    fusion.head.weight.copy_(teacher.head.weight)
    fusion.head.bias.copy_(teacher.head.bias)


def strip_head(model: VisionTransformer) -> VisionTransformer:
    """The same network without its classification head: it outputs the final CLS feature."""
    from dataclasses import replace

    out = VisionTransformer(replace(model.config, num_classes=0))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    out.load_state_dict(state, strict=True)
    return out.eval()


def sample_presence(batch: int, devices: int, dropout: float, generator: torch.Generator) -> torch.Tensor:
    """(batch, devices) mask: each device missing with probability ``dropout``, never all of them."""
    present = torch.rand(batch, devices, generator=generator, device=generator.device) >= dropout
    # An image that lost every device keeps one at random; drawn for every row and applied where
    # needed, so nothing waits for the device to say whether any row needs it.
    keep = torch.randint(0, devices, (batch,), generator=generator, device=generator.device)
    rescue = F.one_hot(keep, devices).bool() & ~present.any(dim=1, keepdim=True)
    return present | rescue


@torch.no_grad()
def ensemble_accuracy(
    ensemble: DeViTEnsemble, x: torch.Tensor, y: torch.Tensor, missing: Sequence[int] = (), batch_size: int = 256
) -> float:
    """Top-1 accuracy with the devices in ``missing`` marked missing for every image (batches go
    to the device holding the ensemble)."""
    ensemble.eval()
    device = model_device(ensemble)
    outs = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        present = torch.ones(len(xb), ensemble.num_devices, dtype=torch.bool, device=device)
        present[:, list(missing)] = False
        outs.append(ensemble(xb, present).float().cpu())
    if not outs:
        return 0.0
    return accuracy(torch.cat(outs).numpy(), y.cpu().numpy())


def train_ensemble(
    ensemble: DeViTEnsemble,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    targets: TeacherTargets | TeacherSignal,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    config: EnsembleConfig,
) -> TrainResult:
    """Fine-tune sub-models and fusion jointly; validation accuracy with every device present.

    ``targets``: the teacher's logits and CLS tokens on ``x_train`` (cached: the images train as they
    are), or a signal running the teacher on every augmented batch. Trains on ``config.loop.device``.
    """
    signal = as_signal(targets)
    if signal.cached is not None and signal.cached.cls is None:
        raise InvalidInput("ensemble training needs the teacher's CLS tokens")
    width = signal.cached.cls.shape[1] if signal.cached is not None else signal.teacher.config.embed_dim
    if width != ensemble.fusion.config.embed_dim:
        raise InvalidInput(
            f"the fusion head maps to width {ensemble.fusion.config.embed_dim}, the teacher's CLS token has {width}"
        )
    device = training_device(config.loop.device)
    signal = signal.to(device)
    x_train, y_train, x_val = x_train.to(device), y_train.to(device), x_val.to(device)
    wrapper = _TrainForward(ensemble)
    a = config.alpha
    n = ensemble.num_devices

    def loss_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
        images = batch_images(signal, x_train[batch.index], config.loop, batch)
        teacher = signal(images.x, batch.index, with_cls=True)
        present = sample_presence(len(batch.index), n, config.device_dropout, batch.generator)
        h, logits = module(images.x, present)
        ce = images.mix(lambda y: F.cross_entropy(logits, y, label_smoothing=config.loop.label_smoothing), y_train[batch.index])
        loss = (1 - a) * ce + a * kd_loss(logits, teacher.logits, config.kd_temperature)
        if config.mse_weight:
            loss = loss + config.mse_weight * F.mse_loss(h.float(), teacher.cls)
        return loss

    def evaluate(module: nn.Module) -> float:
        return ensemble_accuracy(module.ensemble, x_val, y_val) if len(x_val) else 0.0

    groups = [
        (list(ensemble.fusion.parameters()), 1.0),
        (list(ensemble.submodels.parameters()), config.backbone_lr_scale),
    ]
    with teacher_placed(signal, device):
        return train_loop(wrapper, len(x_train), loss_fn, config.loop, evaluate, param_groups=groups)
