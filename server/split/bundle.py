"""Write a split bundle: the whole backbone, and per candidate point a head, an encoder, a decoder
and a tail, plus sample images for profiling and ``report.json``.

Parts (each rebuilt by ``Bundle.load_module``):

* ``model``: the whole backbone (the server at point 0, the device at the last point);
* ``pointP.head`` / ``pointP.tail``: ``build_model(config).segment(0, P)`` / ``.segment(P, 5)``;
* ``pointP.encoder`` / ``pointP.decoder``: ``build_model({"arch": "ae-encoder" | "ae-decoder", ...})``;
* ``samples``: a few uint8 test images and labels (not a module), so ``coinfer profile`` measures
  real payloads without the dataset.

The manifest metadata's ``split`` section (``coinfer.core.split_point``) says which parts each
point runs on each side and how its latent is encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from coinfer.core.bundle import Bundle, PartToWrite, TensorSpec, write_bundle
from coinfer.core.model_io import FEATURE, IMAGE_INPUT, LATENT, LOGITS_OUTPUT
from coinfer.core.split_point import MODEL_PART, SAMPLES_PART, SPLIT_POINTS_KIND, SPLIT_SCHEMA


@dataclass
class PointParts:
    """The trained modules of one intermediate split point."""

    index: int
    name: str
    head: nn.Module
    """Segment (0, index) of the backbone (fine-tuned or shared)."""
    encoder: nn.Module
    decoder: nn.Module
    tail: nn.Module
    """Segment (index, last) of the backbone."""
    bits: int
    compress: bool | None
    feature_shape: tuple[int, ...]
    """One image's feature, batch dimension 1."""
    latent_shape: tuple[int, ...]


def _variable_batch(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (-1, *shape[1:])


def write_split_bundle(
    path: str | Path,
    *,
    backbone,
    dataset: str,
    points: list[PointParts],
    samples: tuple[np.ndarray, np.ndarray],
    report_json: str,
    name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Bundle:
    """Write the bundle atomically (nothing is left behind on failure) and return it loaded.

    ``name`` defaults to ``split-<arch>-<dataset>``; ``metadata`` adds keys beside ``split``
    (e.g. the served ``model_name``).
    """
    config = backbone.config_dict()
    last = backbone.num_points - 1
    in_shape = backbone.feature_shape(0)
    out_shape = backbone.feature_shape(last)
    images = TensorSpec(IMAGE_INPUT, "FP32", _variable_batch(in_shape))
    logits = TensorSpec(LOGITS_OUTPUT, "FP32", _variable_batch(out_shape))
    parts = [
        PartToWrite(MODEL_PART, backbone.state_dict(), "model", config, inputs=[images], outputs=[logits]),
    ]
    plan = [{"index": 0, "name": backbone.point_names[0], "head": None, "encoder": None, "decoder": None,
             "tail": MODEL_PART, "bits": 0, "compress": False}]
    for p in points:
        prefix = f"point{p.index}"
        feature = TensorSpec(FEATURE, "FP32", _variable_batch(p.feature_shape))
        latent = TensorSpec(LATENT, "FP32", _variable_batch(p.latent_shape))
        parts += [
            PartToWrite(f"{prefix}.head", p.head.state_dict(), "head", {**config, "segment": [0, p.index]},
                        inputs=[images], outputs=[feature]),
            PartToWrite(f"{prefix}.encoder", p.encoder.state_dict(), "encoder", p.encoder.config_dict(),
                        inputs=[feature], outputs=[latent]),
            PartToWrite(f"{prefix}.decoder", p.decoder.state_dict(), "decoder", p.decoder.config_dict(),
                        inputs=[latent], outputs=[feature]),
            PartToWrite(f"{prefix}.tail", p.tail.state_dict(), "tail", {**config, "segment": [p.index, last]},
                        inputs=[feature], outputs=[logits]),
        ]
        plan.append({"index": p.index, "name": p.name, "head": f"{prefix}.head", "encoder": f"{prefix}.encoder",
                     "decoder": f"{prefix}.decoder", "tail": f"{prefix}.tail", "bits": p.bits,
                     "compress": p.compress, "feature_shape": list(p.feature_shape),
                     "latent_shape": list(p.latent_shape)})
    plan.append({"index": last, "name": backbone.point_names[last], "head": MODEL_PART, "encoder": None,
                 "decoder": None, "tail": None, "bits": 0, "compress": False})
    images, labels = samples
    parts.append(PartToWrite(SAMPLES_PART, {"images": torch.from_numpy(np.ascontiguousarray(images)),
                                            "labels": torch.from_numpy(np.ascontiguousarray(labels))}, "samples"))
    metadata = {
        **dict(metadata or {}),
        "split": {
            "schema": SPLIT_SCHEMA,
            "backbone": backbone.arch,
            "dataset": dataset,
            "input_shape": list(in_shape[1:]),
            "input_datatype": "UINT8",
            "input_scale": "x / 255",
            "num_classes": int(out_shape[1]),
            "points": plan,
        }
    }
    return write_bundle(path, name=name or f"split-{backbone.arch}-{dataset}", kind=SPLIT_POINTS_KIND, parts=parts,
                        metadata=metadata, extra_files={"report.json": report_json}, overwrite=overwrite)
