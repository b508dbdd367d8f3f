"""The deployable DeViT bundle: one part per device and the fusion head.

Layout (a ``coinfer.core.bundle`` of kind ``"devit"``):

* ``device-{i}`` (role ``"submodel"``): a head-less ViT, ``build_model(config)`` in the core
  registry; input ``image`` FP32 (B, C, H, W) scaled to [0, 1], output ``cls_feature`` FP32 (B, d_i);
* ``fusion`` (role ``"fusion"``): config ``{"arch": "devit-fusion", ...}`` rebuilt by
  :func:`coinfer.core.models.fusion.build_fusion`; inputs ``feature_0 .. feature_{N-1}`` FP32
  (B, d_i) and ``present`` BOOL (B, N); output ``logits`` FP32 (B, classes);
* metadata ``"devit"``: the class partition, class names, speeds and part names; the bundle
  folder also holds ``report.json``.

A runtime needs only :func:`load_devit`: ``deployment.submodels[i](image)`` on device i and
``deployment.fusion.forward_available({i: feature, ...})`` (or ``fusion(features, present)``)
where the features arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from coinfer.core.errors import InvalidInput

KIND = "devit"
FUSION_PART = "fusion"


def device_part(i: int) -> str:
    """Name of device i's part."""
    return f"device-{i}"


@dataclass
class DeViTDeployment:
    """A loaded DeViT bundle: modules in evaluation mode plus the manifest's description."""

    submodels: list
    """Head-less ViTs, device order; each maps images to its CLS feature."""
    fusion: Any
    """The DeViTFusion head."""
    partition: list[list[int]]
    """Class ids of each device."""
    class_names: list[str]
    metadata: dict[str, Any]
    """The bundle's full metadata."""


def write_devit_bundle(
    path: str | Path,
    submodels: Sequence,
    fusion,
    partition: Sequence[Sequence[int]],
    metadata: Mapping[str, Any],
    report_json: str,
    overwrite: bool = False,
):
    """Write the bundle atomically (nothing is left behind if anything fails)."""
    from coinfer.core.bundle import PartToWrite, TensorSpec, write_bundle
    from coinfer.core.models.fusion import fusion_input_names

    parts = []
    for i, model in enumerate(submodels):
        cfg = model.config
        parts.append(
            PartToWrite(
                name=device_part(i),
                tensors=model.state_dict(),
                role="submodel",
                config=model.config_dict(),
                inputs=[TensorSpec("image", "FP32", (-1, cfg.in_chans, cfg.image_size, cfg.image_size))],
                outputs=[TensorSpec("cls_feature", "FP32", (-1, cfg.embed_dim))],
            )
        )
    widths = fusion.config.feature_dims
    parts.append(
        PartToWrite(
            name=FUSION_PART,
            tensors=fusion.state_dict(),
            role="fusion",
            config=fusion.config_dict(),
            inputs=[
                *(TensorSpec(name, "FP32", (-1, d)) for name, d in zip(fusion_input_names(len(widths)), widths)),
                TensorSpec(fusion_input_names(len(widths))[-1], "BOOL", (-1, len(widths))),
            ],
            outputs=[TensorSpec("logits", "FP32", (-1, fusion.config.num_classes))],
        )
    )
    meta = dict(metadata)
    meta["devit"] = {
        **dict(meta.get("devit", {})),
        "num_devices": len(submodels),
        "partition": [list(map(int, g)) for g in partition],
        "device_parts": [device_part(i) for i in range(len(submodels))],
        "fusion_part": FUSION_PART,
        "input_scale": 1.0 / 255.0,
    }
    return write_bundle(
        path,
        name=Path(path).name,
        kind=KIND,
        parts=parts,
        metadata=meta,
        extra_files={"report.json": report_json},
        overwrite=overwrite,
    )


def load_devit(path: str | Path) -> DeViTDeployment:
    """Rebuild every sub-model and the fusion head from a DeViT bundle (hashes verified, strict loads)."""
    from coinfer.core.bundle import load_bundle
    from coinfer.core.errors import IntegrityError
    from coinfer.core.models.fusion import build_fusion

    bundle = load_bundle(path)
    if bundle.kind != KIND:
        raise InvalidInput(f"{path} is a {bundle.kind!r} bundle, not a DeViT bundle")
    info = bundle.metadata.get("devit")
    if not isinstance(info, dict) or "device_parts" not in info or "partition" not in info:
        raise InvalidInput(f"{path}: metadata 'devit' with device_parts and partition is missing")
    submodels = [bundle.load_module(name) for name in info["device_parts"]]
    spec = bundle.part(info.get("fusion_part", FUSION_PART))
    fusion = build_fusion(spec.config)
    try:
        fusion.load_state_dict(bundle.load_state(spec.name), strict=True)
    except RuntimeError as exc:
        raise IntegrityError(f"part {spec.name!r} of {path}: weights do not fit its config ({exc})") from exc
    widths = tuple(m.config.embed_dim for m in submodels)
    if widths != fusion.config.feature_dims:
        raise InvalidInput(f"{path}: sub-model widths {widths} do not match the fusion head's {fusion.config.feature_dims}")
    return DeViTDeployment(
        submodels=submodels,
        fusion=fusion.eval(),
        partition=[list(g) for g in info["partition"]],
        class_names=list(info.get("class_names", [])),
        metadata=dict(bundle.metadata),
    )
