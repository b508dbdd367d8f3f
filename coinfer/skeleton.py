"""The walking skeleton's model: a thin CNN trained briefly on digits, split at one point.

It exists to carry the runtime end to end (registration, part download, head on the device,
8-bit feature over the link, tail on the coordinator) before the real split-point training and
scheduling arrive; it is deliberately small and quick to train on a CPU. The bundle it writes is
the single-point kind "split" (see `coinfer.core.split_point` for how it is read, and
`coinfer.server.deployment` for the serving keys).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from coinfer.core.bundle import Bundle, PartToWrite, TensorSpec, load_bundle, write_bundle
from coinfer.core.errors import CoinferError, InvalidInput
from coinfer.core.model_io import DEFAULT_MAX_BATCH, FEATURE, IMAGE_INPUT, LOGITS_OUTPUT
from coinfer.core.split_point import SPLIT_KIND
from coinfer.server.deployment import DEFAULT_POWER_W, DEFAULT_SUB_CHANNELS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkeletonConfig:
    """How the skeleton model is built, trained and split."""

    arch: str = "resnet18"
    """Backbone ("resnet18" or "vgg11")."""
    width_mult: float = 0.25
    """Channel width multiplier (thin = fast on a CPU)."""
    split_point: int = 2
    """The one split point (1..4; 2 = after layer2, a middle point)."""
    codec_bits: int = 8
    """Quantisation of the uplinked feature."""
    epochs: int = 2
    batch_size: int = 64
    lr: float = 3e-3
    warmup_epochs: float = 0.2
    seed: int = 0
    dataset: str = "digits"
    threads: int = 0
    """torch threads while training (0 = torch's choice)."""


def build_skeleton_bundle(out_dir: str | Path, config: SkeletonConfig | None = None, *, overwrite: bool = False) -> Bundle:
    """Train the skeleton model and write its split bundle to ``out_dir`` (atomically)."""
    import torch

    from coinfer.core.data import load_dataset
    from coinfer.core.measure import torch_threads
    from coinfer.core.models import build_model
    from coinfer.core.training import TrainConfig, evaluate, train_classifier

    config = config or SkeletonConfig()
    if not 1 <= config.split_point <= 4:
        raise InvalidInput(f"the skeleton splits at a candidate point 1..4, got {config.split_point}")
    splits = load_dataset(config.dataset, seed=config.seed)
    channels, height, width = splits.image_shape
    if height != width:
        raise InvalidInput(f"the skeleton needs square images, {config.dataset} has {height}x{width}")
    torch.manual_seed(config.seed)
    model = build_model(
        {
            "arch": config.arch,
            "in_chans": channels,
            "num_classes": splits.num_classes,
            "image_size": height,
            "width_mult": config.width_mult,
        }
    )
    threads = config.threads or torch.get_num_threads()
    with torch_threads(threads):
        result = train_classifier(
            model,
            splits,
            TrainConfig(
                epochs=config.epochs,
                batch_size=config.batch_size,
                lr=config.lr,
                warmup_epochs=config.warmup_epochs,
                seed=config.seed,
                progress=False,
                desc="skeleton",
            ),
        )
        test_accuracy = evaluate(model, splits.test)
    point = config.split_point
    last = model.num_points - 1
    feature_shape = model.feature_shape(point)[1:]
    image = TensorSpec(IMAGE_INPUT, "UINT8", (-1, channels, height, width))
    feature = TensorSpec(FEATURE, "FP32", (-1, *feature_shape))
    logits = TensorSpec(LOGITS_OUTPUT, "FP32", (-1, splits.num_classes))
    base = model.config_dict()
    parts = [
        PartToWrite("head", model.segment(0, point).state_dict(), role="head", config={**base, "segment": [0, point]}, inputs=[image], outputs=[feature]),
        PartToWrite("tail", model.segment(point, last).state_dict(), role="tail", config={**base, "segment": [point, last]}, inputs=[feature], outputs=[logits]),
    ]
    model_name = f"{config.dataset}-{config.arch}"
    metadata = {
        "model_name": model_name,
        "split_point": point,
        "split_point_name": model.point_names[point],
        "codec_bits": config.codec_bits,
        "codec_compress": False,
        "power_w": DEFAULT_POWER_W,
        "num_sub_channels": DEFAULT_SUB_CHANNELS,
        "max_batch": DEFAULT_MAX_BATCH,
        "input_scaling": "uint8 / 255",
        "dataset": config.dataset,
        "class_names": list(splits.class_names),
        "val_accuracy": result.best_val_accuracy,
        "test_accuracy": test_accuracy,
        "skeleton": asdict(config),
    }
    log.info("skeleton %s: val accuracy %.4f, test accuracy %.4f, split at %s", model_name, result.best_val_accuracy, test_accuracy, model.point_names[point])
    return write_bundle(out_dir, name=f"{model_name}-split", kind=SPLIT_KIND, parts=parts, metadata=metadata, overwrite=overwrite)


def ensure_skeleton_bundle(out_dir: str | Path, config: SkeletonConfig | None = None, *, fresh: bool = False) -> Bundle:
    """The skeleton bundle at ``out_dir``: reused when it loads and verifies, else (re)built."""
    out_dir = Path(out_dir)
    if not fresh and out_dir.exists():
        try:
            bundle = load_bundle(out_dir)
            if bundle.kind == SPLIT_KIND and "skeleton" in bundle.metadata:
                log.info("reusing skeleton bundle %s", out_dir)
                return bundle
        except CoinferError as exc:
            log.warning("rebuilding the skeleton bundle: %s", exc)
    return build_skeleton_bundle(out_dir, config, overwrite=True)
