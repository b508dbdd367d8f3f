"""Train and evaluate the bottleneck at one split point of a frozen backbone.

Training (backbone frozen, as in MAHPPO):
1. reconstruction steps: SmoothL1 between the decoded and the original feature (scaled by the
   feature's standard deviation so every point weighs the same); cheap, the tail does not run;
2. distillation steps: reconstruction + KL divergence between the tail's output on the decoded
   feature and the backbone's own logits (temperature T, scaled by T^2), + optional
   cross-entropy on the labels.
Design "ours" has the codec's rounding in the loop at the deployed bit widths
(``qat_bits``; several widths take turns, so one bottleneck serves them all); design "paper" is
trained in float and quantised afterwards, as in the paper.

Optional joint fine-tuning then trains head, bottleneck and tail together on the images at a
small learning rate, against the labels and the original backbone's logits.

Evaluation sends every test image's latent through the real codec as its own message
(``codec_round_trip``), so accuracies and payloads are what the wire gives.

Head features of a point are computed once (:class:`PointFeatures`) and shared by every
bottleneck trained there.

Both trainings run through the shared loop (:func:`coinfer.core.training.train_loop`), each
stage config holding its :class:`~coinfer.core.training.TrainConfig`. Training may run on a GPU
(``loop.device``); features stay on the CPU and move a minibatch at a time, the frozen networks
run as copies on the device (the backbone itself never leaves the CPU), and every trained module
comes back on the CPU, where evaluation through the codec runs.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coinfer.core.data import DatasetSplits, ImageDataset, to_float
from coinfer.core.device import model_device, resolve_device
from coinfer.core.errors import InvalidInput
from coinfer.core.models.autoencoders import Bottleneck, BottleneckConfig, fake_quantise
from coinfer.core.split_point import codec_round_trip
from coinfer.core.training import Batch, TrainConfig, train_loop

_CACHE_FP16_BYTES = 512 << 20
"""Training features above this size are cached as float16 (evaluation features stay float32)."""


@dataclass
class BottleneckTrainConfig:
    """How to train one bottleneck with the backbone frozen."""

    loop: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-2, weight_decay=1e-4, desc="bottleneck"))
    """Batch size (features per step), peak learning rate of design "ours", weight decay, seed,
    progress and device; the budget and warm-up come from the steps below (5% of them warm up)."""
    recon_steps: int = 300
    """Optimiser steps on the reconstruction loss alone (the tail does not run)."""
    distill_steps: int = 100
    """Optimiser steps on reconstruction + distillation through the frozen tail."""
    paper_lr: float = 0.1
    """Peak learning rate of the paper's linear bottleneck: the paper's own value. Without
    normalisation it learns far slower; on digits at point 1, 140 steps at 2e-3 / 1e-2 / 3e-2 / 0.1
    gave 9% / 20% / 54% / 67% accuracy."""
    recon_weight: float = 1.0
    """Weight of the SmoothL1 reconstruction loss."""
    kd_weight: float = 1.0
    """Weight of the distillation loss to the backbone's logits."""
    kd_temperature: float = 2.0
    """Softmax temperature of the distillation loss."""
    ce_weight: float = 0.0
    """Weight of cross-entropy on the labels during distillation steps."""
    qat_bits: tuple[int, ...] = ()
    """Codec bit widths put in the loop for design "ours", taking turns step by step; () = none."""


@dataclass
class FinetuneConfig:
    """Optional joint fine-tuning of head, bottleneck and tail at one point."""

    loop: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, weight_decay=0.0, desc="finetune"))
    """Batch size (images per step), learning rate (cosine decay), seed, progress and device; the budget is ``steps``."""
    steps: int = 0
    """Optimiser steps; 0 skips fine-tuning."""
    kd_weight: float = 0.5
    """Weight of distillation to the original backbone (the rest goes to cross-entropy)."""
    kd_temperature: float = 2.0
    """Softmax temperature of the distillation loss."""


@dataclass
class PointFeatures:
    """Head outputs of one point on the splits, computed once and shared by its bottlenecks."""

    point: int
    train: torch.Tensor
    """Training features (float16 when large)."""
    train_teacher: torch.Tensor
    """The backbone's logits on the training images."""
    train_labels: torch.Tensor
    val: torch.Tensor
    val_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    scale: float
    """Standard deviation of the training features (reconstruction loss scale)."""

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one feature, with batch 1."""
        return (1, *self.train.shape[1:])


def run_batches(fn, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``fn`` over ``x`` in batches, without gradients."""
    with torch.inference_mode():
        if len(x) == 0:
            return fn(x)
        return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def on_device(module: nn.Module, device: torch.device):
    """``module`` as a function of CPU tensors run on ``device``: batches go there, results come back."""
    if device.type == "cpu":
        return module
    return lambda x: module(x.to(device)).cpu()


def _device_copy(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` itself on the CPU; elsewhere a copy moved there, so a module that shares its
    parameters with a backbone (a segment) never splits that backbone across devices."""
    return module if device.type == "cpu" else copy.deepcopy(module).to(device)


def compute_point_features(
    backbone,
    point: int,
    splits: DatasetSplits,
    max_train_images: int = 0,
    seed: int = 0,
    include_val: bool = True,
    device: str = "cpu",
) -> PointFeatures:
    """Head features at ``point`` for (a seeded subset of) train, all of test, and val unless left out.

    With a GPU ``device`` the backbone runs as a copy there; the features are returned on the CPU.
    """
    backbone.eval()
    dev = resolve_device(device)
    net = _device_copy(backbone, dev).eval()
    head = on_device(net.segment(0, point), dev)
    train = splits.train
    if max_train_images and len(train) > max_train_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(train), max_train_images, replace=False))
        train = train.subset(keep)
    x_train = to_float(train.x)
    f_train = run_batches(head, x_train)
    teacher = run_batches(on_device(net.segment(point, net.num_points - 1), dev), f_train)
    scale = float(f_train.float().std()) or 1.0
    if f_train.numel() * 4 > _CACHE_FP16_BYTES:
        f_train = f_train.half()
    return PointFeatures(
        point=point,
        train=f_train,
        train_teacher=teacher,
        train_labels=torch.from_numpy(train.y),
        val=run_batches(head, to_float(splits.val.x if include_val else splits.val.x[:0])),
        val_labels=torch.from_numpy(splits.val.y if include_val else splits.val.y[:0]),
        test=run_batches(head, to_float(splits.test.x)),
        test_labels=torch.from_numpy(splits.test.y),
        scale=scale,
    )


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    log_target=True, reduction="batchmean") * t * t


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@dataclass
class TrainLog:
    """Losses of one bottleneck's training, for the report."""

    recon_loss: list[float] = field(default_factory=list)
    distill_loss: list[float] = field(default_factory=list)


def train_bottleneck(
    config: BottleneckConfig,
    features: PointFeatures,
    tail: nn.Module,
    train: BottleneckTrainConfig,
    desc: str = "bottleneck",
) -> tuple[Bottleneck, TrainLog]:
    """A trained bottleneck for ``features``; ``tail`` (frozen here) maps the feature to logits.

    Training runs on ``train.loop.device``: the bottleneck and a copy of the tail go there, features
    move a minibatch at a time; the bottleneck is returned on the CPU and ``tail`` itself never moves.
    """
    if features.feature_shape != config.feature_shape(1):
        raise InvalidInput(f"bottleneck expects features {config.feature_shape(1)}, point gives {features.feature_shape}")
    for bits in train.qat_bits:
        if bits not in (8, 4, 2):
            raise InvalidInput(f"qat_bits must be 8, 4 or 2, got {bits}")
    device = resolve_device(train.loop.device)
    torch.manual_seed(train.loop.seed)
    ae = Bottleneck(config)  # initialised on the CPU, so a seed gives the same start everywhere
    run_tail = _freeze(_device_copy(_freeze(tail), device))
    qat = train.qat_bits if config.design == "ours" else ()
    total = train.recon_steps + train.distill_steps

    def loss_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
        idx = batch.cpu_index  # the features stay on the CPU (they may be large) and move a batch at a time
        f = features.train[idx].to(device).float()  # float16 crosses to the GPU at half the bytes
        restored = module(f, qat[batch.step % len(qat)] if qat else 0)
        loss = train.recon_weight * F.smooth_l1_loss(restored / features.scale, f / features.scale)
        if batch.step >= train.recon_steps:
            logits = run_tail(restored)
            teacher = features.train_teacher[idx].to(device)
            loss = loss + train.kd_weight * distillation_loss(logits, teacher, train.kd_temperature)
            if train.ce_weight:
                loss = loss + train.ce_weight * F.cross_entropy(logits, features.train_labels[idx].to(device))
        return loss

    loop = dataclasses.replace(
        train.loop, steps=total, warmup_fraction=0.05, desc=desc,
        lr=train.paper_lr if config.design == "paper" else train.loop.lr,
    )
    result = train_loop(ae, len(features.train), loss_fn, loop)
    losses = result.train_loss_per_step
    return ae, TrainLog(recon_loss=losses[: train.recon_steps], distill_loss=losses[train.recon_steps :])


@dataclass(frozen=True)
class Evaluation:
    """Accuracy and real payload of one bottleneck at one bit width on one split."""

    accuracy: float
    payload_bytes_mean: float
    payload_bytes_min: int
    payload_bytes_max: int


def evaluate_bottleneck(
    ae: Bottleneck,
    tail: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    bits: int,
    compress: bool | None = None,
    batch_size: int = 256,
) -> Evaluation:
    """Encode, send through the codec one image at a time, decode, run the tail: accuracy and bytes.

    Runs on the CPU, where the codec is: ``ae`` and ``tail`` must be there.
    """
    for name, module in (("bottleneck", ae), ("tail", tail)):
        if model_device(module).type != "cpu":
            raise InvalidInput(f"evaluate_bottleneck runs on the CPU, but the {name} is on {model_device(module)}")
    ae.eval()
    tail.eval()
    correct, sizes = 0, []
    with torch.inference_mode():
        for i in range(0, len(features), batch_size):
            latent = ae.encoder(features[i : i + batch_size].float())
            received, size = codec_round_trip(latent, bits, compress)
            logits = tail(ae.decoder(received))
            correct += int((logits.argmax(1) == labels[i : i + batch_size]).sum())
            sizes.append(size)
    all_sizes = np.concatenate(sizes)
    return Evaluation(correct / max(1, len(labels)), float(all_sizes.mean()), int(all_sizes.min()), int(all_sizes.max()))


def finetune_point(
    backbone,
    ae: Bottleneck,
    point: int,
    splits: DatasetSplits,
    bits: int,
    config: FinetuneConfig,
    desc: str = "finetune",
) -> tuple[nn.Module, nn.Module]:
    """Jointly fine-tune a copy of the backbone's head and tail with ``ae`` (in place).

    Returns the fine-tuned (head, tail) segments; the backbone itself is not changed. BatchNorm
    statistics stay frozen so the few steps cannot drift them. Training runs on
    ``config.loop.device``; the segments and ``ae`` are returned on the CPU.
    """
    device = resolve_device(config.loop.device)
    teacher = _freeze(copy.deepcopy(backbone).to(device))
    student = copy.deepcopy(backbone)
    for p in student.parameters():
        p.requires_grad_(True)
    joint = nn.ModuleDict({"student": student, "ae": ae})
    x_train, y_train = (t.to(device) for t in splits.train.tensors())
    a = config.kd_weight

    def loss_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
        x, y = x_train[batch.index], y_train[batch.index]
        net, bottleneck = module["student"], module["ae"]
        net.eval()  # frozen BatchNorm statistics; weights still learn
        bottleneck.eval()
        with torch.no_grad():
            target = teacher(x)
        latent = bottleneck.encoder(net.segment(0, point)(x))
        if bits:
            latent = fake_quantise(latent, bits)
        logits = net.segment(point, net.num_points - 1)(bottleneck.decoder(latent))
        return (1 - a) * F.cross_entropy(logits, y) + a * distillation_loss(logits, target, config.kd_temperature)

    if config.steps > 0:
        loop = dataclasses.replace(config.loop, steps=config.steps, warmup_fraction=0.0, desc=desc)
        train_loop(joint, len(x_train), loss_fn, loop)  # leaves student and ae on the CPU
    for p in student.parameters():
        p.requires_grad_(False)
    # Fresh segments of the CPU student: ones made before a move could hold stale buffer references.
    head, tail = student.segment(0, point), student.segment(point, student.num_points - 1)
    return head.eval(), tail.eval()


def split_subset(split: ImageDataset, count: int, seed: int = 0) -> ImageDataset:
    """A seeded subset of ``count`` images (the whole split when it is smaller)."""
    if count <= 0 or count >= len(split):
        return split
    return split.subset(np.sort(np.random.default_rng(seed).choice(len(split), count, replace=False)))
