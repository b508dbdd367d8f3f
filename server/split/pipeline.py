"""`coinfer split` end to end: backbone, a bottleneck per candidate point, report and bundle.

1. Load the dataset and build the backbone; train it (or load ``weights``) and measure it.
2. For every candidate point: compute the head features once, size each bottleneck design to
   the compression target at the chosen bit width (exact codec bytes), train it with the
   backbone frozen, and keep the design with the better validation accuracy through the codec
   (``bottleneck="auto"``); optionally fine-tune head, bottleneck and tail jointly.
3. Measure every point on the test split (real codec round trip per image), its device-side
   latency and MACs, and write the bundle with ``report.json`` in one atomic step.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coinfer.core.codec import encode, to_bytes
from coinfer.core.data import DatasetSplits, load_dataset, to_float
from coinfer.core.errors import InvalidInput, NotFound
from coinfer.core.training import TrainConfig, with_loop
from coinfer.server.split.backbones import backbone_config, check_backbone, load_weights
from coinfer.server.split.report import CandidateReport, PointReport, SplitReport
from coinfer.server.split.train import (
    BottleneckTrainConfig,
    FinetuneConfig,
    PointFeatures,
    run_batches,
    compute_point_features,
    evaluate_bottleneck,
    finetune_point,
    split_subset,
    train_bottleneck,
)

log = logging.getLogger(__name__)
BOTTLENECK_CHOICES = ("auto", "paper", "ours")


@dataclass
class SplitConfig:
    """One `coinfer split` run."""

    backbone: str = "resnet18"
    """vgg11, resnet18, mobilenetv2 or vit."""
    dataset: str = "digits"
    """Dataset name (coinfer.core.data)."""
    data_dir: str | None = None
    """Folder or file of the dataset where it needs one."""
    points: tuple[int | str, ...] = (1, 2, 3, 4)
    """Candidate points (index or name) that get a bottleneck; 0 and the last point are always in the bundle."""
    bits: int = 4
    """Codec quantisation bits of every latent (8, 4 or 2)."""
    compression: float = 64.0
    """Target feature_fp32_bytes / payload_bytes; each latent is sized to meet it without zlib."""
    bottleneck: str = "auto"
    """"paper", "ours", or "auto" (train both, keep the better on validation)."""
    compress: bool | None = None
    """zlib stage of the codec: None = per message when it pays, False = never."""
    width_mult: float = 0.25
    """Backbone width multiplier."""
    weights: str | None = None
    """A safetensors state dict of the backbone to use instead of training one."""
    backbone_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=2e-3, desc="backbone"))
    """How to train the backbone (ignored with weights)."""
    bottleneck_train: BottleneckTrainConfig = field(default_factory=BottleneckTrainConfig)
    """How to train each bottleneck (its qat_bits default to (bits,))."""
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    """Optional joint fine-tuning (steps=0 skips it)."""
    max_train_images: int = 16000
    """Training images whose features train the bottlenecks (0 = all)."""
    test_images: int = 0
    """Test images to measure on (0 = the whole test split)."""
    samples: int = 16
    """Test images stored in the bundle for `coinfer profile`."""
    latency_repeats: int = 30
    """Timed batch-1 runs per point for head_latency_ms."""
    seed: int = 0
    """Seeds data splits, subsets and training."""
    overwrite: bool = False
    """Replace an existing bundle."""


def quick_config(**overrides) -> SplitConfig:
    """Settings for `coinfer split --quick`: digits, a thin backbone, short training (minutes on 2 cores)."""
    config = SplitConfig(
        dataset="digits",
        backbone_train=TrainConfig(epochs=12, lr=3e-3, batch_size=64, desc="backbone"),
        bottleneck_train=with_loop(BottleneckTrainConfig(recon_steps=120, distill_steps=60), batch_size=64),
        latency_repeats=15,
    )
    return dataclasses.replace(config, **overrides)


def resolve_points(model, points) -> list[int]:
    """Candidate point indices from indices or names; anything else lists the valid ones."""
    valid = {i: model.point_names[i] for i in range(1, model.num_points - 1)}
    listing = ", ".join(f"{i} ({n})" for i, n in valid.items())
    out = []
    for p in points:
        if isinstance(p, str) and p.isdigit():
            p = int(p)
        index = p if isinstance(p, int) and not isinstance(p, bool) else None
        if isinstance(p, str) and p in valid.values():
            index = model.point_names.index(p)
        if index not in valid:
            raise NotFound(f"unknown split point {p!r} for {model.arch}; candidate points: {listing} "
                           f"(0 and {model.num_points - 1} are always included)")
        if index not in out:
            out.append(index)
    if not out:
        raise InvalidInput(f"give at least one candidate point; candidate points: {listing}")
    return sorted(out)


def _check(config: SplitConfig) -> None:
    check_backbone(config.backbone)
    if config.bits not in (8, 4, 2):
        raise InvalidInput(f"bits must be 8, 4 or 2, got {config.bits}")
    if config.bottleneck not in BOTTLENECK_CHOICES:
        raise InvalidInput(f"bottleneck must be one of {', '.join(BOTTLENECK_CHOICES)}, got {config.bottleneck!r}")
    if not config.compression > 0:
        raise InvalidInput(f"compression target must be positive, got {config.compression}")
    if config.compress not in (None, False, True):
        raise InvalidInput("compress must be None (when it pays), False or True")
    from coinfer.core.device import resolve_device

    # Before any data loads: a bad device, or cuda without a GPU, fails here and says so.
    for loop in (config.backbone_train, config.bottleneck_train.loop, config.finetune.loop):
        resolve_device(loop.device)


def prepare_backbone(config: SplitConfig, splits: DatasetSplits):
    """The backbone with trained (or loaded) weights, in evaluation mode."""
    import torch

    from coinfer.core.models import build_model
    from coinfer.core.training import train_classifier

    # Seed the initial weights too: train_classifier seeds only what happens after them.
    torch.manual_seed(config.seed)
    model = build_model(backbone_config(config.backbone, splits, config.width_mult))
    if config.weights:
        load_weights(model, config.weights)
    else:
        train_classifier(model, splits, dataclasses.replace(config.backbone_train, seed=config.seed))
    return model.eval()


def _latency_ms(device_half, image: np.ndarray, repeats: int) -> float:
    """Median batch-1 time of a device half on one image (1, C, H, W): its parts and the codec."""
    from coinfer.core.measure import measure_latency

    return measure_latency(lambda: device_half(image), warmup=3, repeats=repeats, threads=1).median_ms


def run_split(config: SplitConfig, out: str | Path) -> SplitReport:
    """Train, measure and write the split bundle at ``out``; returns its report."""
    import torch

    from coinfer.core.measure import accuracy, predict
    from coinfer.core.models import count_macs
    from coinfer.core.split_point import MODEL_PART, DeviceHalf, PointPlan
    from coinfer.server.split import sizing
    from coinfer.server.split.bundle import PointParts, write_split_bundle

    _check(config)
    out = Path(out)
    if out.exists() and not config.overwrite:
        raise InvalidInput(f"{out} already exists; choose another folder or pass --overwrite")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    splits = load_dataset(config.dataset, config.data_dir, seed=config.seed)
    splits = dataclasses.replace(splits, test=split_subset(splits.test, config.test_images, config.seed))
    from coinfer.core.models import build_model

    resolved = resolve_points(build_model(backbone_config(config.backbone, splits, config.width_mult)), config.points)
    model = prepare_backbone(config, splits)
    timings["backbone_s"] = time.perf_counter() - started
    x_test = to_float(splits.test.x)
    backbone_acc = accuracy(predict(model, x_test), splits.test.y)
    log.info("backbone %s test accuracy %.4f", config.backbone, backbone_acc)

    designs = ("paper", "ours") if config.bottleneck == "auto" else (config.bottleneck,)
    train_cfg = config.bottleneck_train
    if not train_cfg.qat_bits:
        train_cfg = dataclasses.replace(train_cfg, qat_bits=(config.bits,))
    train_cfg = with_loop(train_cfg, seed=config.seed)
    last = model.num_points - 1
    sample_image = splits.test.x[:1]
    point_parts: list[PointParts] = []
    reports: list[PointReport] = []
    for p in resolved:
        t0 = time.perf_counter()
        feats: PointFeatures = compute_point_features(model, p, splits, config.max_train_images, config.seed,
                                                      device=train_cfg.loop.device)
        tail = model.segment(p, last)
        fp32 = sizing.fp32_bytes(feats.feature_shape)
        best = None
        candidates = []
        for design in designs:
            bcfg = sizing.for_compression(feats.feature_shape, design, config.compression, config.bits)
            t1 = time.perf_counter()
            ae, _ = train_bottleneck(bcfg, feats, tail, train_cfg, desc=f"point {p} {design}")
            seconds = time.perf_counter() - t1
            val = evaluate_bottleneck(ae, tail, feats.val, feats.val_labels, config.bits, config.compress)
            test = evaluate_bottleneck(ae, tail, feats.test, feats.test_labels, config.bits, config.compress)
            candidates.append(CandidateReport(design, list(bcfg.latent_shape(1)), val.accuracy, test.accuracy,
                                              test.payload_bytes_mean, seconds))
            log.info("point %d %s latent %s: val %.4f test %.4f, %.1f B", p, design, bcfg.latent_shape(1),
                     val.accuracy, test.accuracy, test.payload_bytes_mean)
            # Validation decides; on a tie the smaller payload wins.
            key = (val.accuracy, -test.payload_bytes_mean)
            if best is None or key > best[0]:
                best = (key, design, bcfg, ae, test)
        _, design, bcfg, ae, test = best
        head = model.segment(0, p)
        if config.finetune.steps > 0:
            ft = with_loop(config.finetune, seed=config.seed)
            head, tail = finetune_point(model, ae, p, splits, config.bits, ft, desc=f"point {p} finetune")
            test = evaluate_bottleneck(ae, tail, run_batches(head, x_test), feats.test_labels, config.bits,
                                       config.compress)
        del feats
        plan = PointPlan(p, model.point_names[p], ("head", "encoder"), True, config.bits, config.compress, ("decoder", "tail"))
        device = DeviceHalf(plan, [head, ae.encoder])
        encoder_macs = count_macs(ae.encoder, torch.zeros(bcfg.feature_shape(1)))
        reports.append(PointReport(
            index=p, name=model.point_names[p], accuracy=test.accuracy, feature_fp32_bytes=fp32,
            payload_bytes=round(test.payload_bytes_mean, 2), compression=round(fp32 / test.payload_bytes_mean, 3),
            head_macs=model.head_macs(p) + encoder_macs,
            head_latency_ms=_latency_ms(device, sample_image, config.latency_repeats),
            payload_bytes_min=test.payload_bytes_min, payload_bytes_max=test.payload_bytes_max,
            design=design, bits=config.bits, latent_shape=list(bcfg.latent_shape(1)), candidates=candidates,
        ))
        point_parts.append(PointParts(p, model.point_names[p], head, ae.encoder, ae.decoder, tail, config.bits,
                                      config.compress, bcfg.feature_shape(1), bcfg.latent_shape(1)))
        timings[f"point{p}_s"] = time.perf_counter() - t0

    # Point 0 sends the uint8 image, the last point sends nothing; both keep the backbone's accuracy.
    raw_bytes = int(np.prod(splits.image_shape))
    image_payload = len(to_bytes(encode(sample_image)))
    input_fp32 = 4 * raw_bytes
    local = DeviceHalf(PointPlan(last, model.point_names[last], (MODEL_PART,), False, 0, False), [model])
    upload = DeviceHalf(PointPlan(0, model.point_names[0], (), True, 0, False, (MODEL_PART,)), [])
    reports.insert(0, PointReport(0, model.point_names[0], backbone_acc, input_fp32, float(image_payload),
                                  round(input_fp32 / image_payload, 3), 0,
                                  _latency_ms(upload, sample_image, config.latency_repeats),
                                  image_payload, image_payload))
    reports.append(PointReport(last, model.point_names[last], backbone_acc, 4 * splits.num_classes, 0.0, None,
                               model.head_macs(last), _latency_ms(local, sample_image, config.latency_repeats)))

    settings = {
        "bits": config.bits, "compression_target": config.compression, "bottleneck": config.bottleneck,
        "compress": config.compress, "width_mult": config.width_mult, "weights": config.weights,
        "seed": config.seed, "max_train_images": config.max_train_images, "test_images": len(splits.test),
        "backbone_train": None if config.weights else dataclasses.asdict(config.backbone_train),
        "bottleneck_train": dataclasses.asdict(train_cfg), "finetune": dataclasses.asdict(config.finetune),
    }
    timings["total_s"] = time.perf_counter() - started
    report = SplitReport(config.backbone, config.dataset, backbone_acc, raw_bytes, reports,
                         model.config_dict(), settings, {k: round(v, 2) for k, v in timings.items()})
    count = min(config.samples, len(splits.test))
    write_split_bundle(out, backbone=model, dataset=config.dataset, points=point_parts,
                       samples=(splits.test.x[:count], splits.test.y[:count]), report_json=report.to_json(),
                       overwrite=config.overwrite)
    return report
