"""The DeViT bundle: one sub-model part per device and the fusion head, written, read and checked here.

Layout (a `coinfer.core.bundle` of kind ``"devit"``):

* ``device-{i}`` (role ``"submodel"``): a head-less ViT, ``build_model(config)`` in the core
  registry; input ``image`` FP32 (B, C, H, W) scaled to [0, 1], output ``cls_feature`` FP32 (B, d_i);
* ``fusion`` (role ``"fusion"``): config ``{"arch": "devit-fusion", ...}``, rebuilt by the same
  registry; inputs ``feature_0 .. feature_{N-1}`` FP32 (B, d_i) and ``present`` BOOL (B, N);
  output ``logits`` FP32 (B, classes);
* metadata ``"devit"``: ``device_parts`` and ``fusion_part`` (the part names), ``partition``
  (the class ids of each device), ``class_names``, and whatever the writer adds (speeds, the
  teacher); the bundle folder also holds ``report.json``.

`read_devit_layout` checks all of it from the manifest alone (no weights are read), so the
coordinator and the DEKD tools refuse a damaged bundle with the same message, naming the field;
`load_devit` rebuilds the modules: ``deployment.submodels[i](image)`` on device i and
``deployment.fusion.forward_available({i: feature, ...})`` where the features arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from coinfer.core.bundle import Bundle, PartToWrite, TensorSpec, load_bundle, write_bundle
from coinfer.core.errors import InvalidInput
from coinfer.core.model_io import CLS_FEATURE, IMAGE_INPUT, LOGITS_OUTPUT

DEVIT_KIND = "devit"
"""Bundle kind of a DeViT bundle."""
FUSION_PART = "fusion"
"""Default name of the fusion head's part."""
SUBMODEL_ROLE = "submodel"
FUSION_ROLE = "fusion"


def device_part(i: int) -> str:
    """Name of device i's part."""
    return f"device-{i}"


@dataclass(frozen=True)
class DeViTLayout:
    """A DeViT bundle's description, checked against its manifest."""

    model_name: str
    """Name under which the model is served (metadata ``model_name``, else the bundle's name)."""
    submodel_parts: tuple[str, ...]
    """Part of each device's sub-model, in the fusion head's device order."""
    fusion_part: str
    partition: tuple[tuple[int, ...], ...]
    """Class ids of each device."""
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    """(C, H, W) of the images every sub-model takes."""
    feature_dims: tuple[int, ...]
    """Width of each sub-model's CLS feature, in device order."""
    num_classes: int


def _fail(bundle: Bundle, field: str, problem: str) -> InvalidInput:
    return InvalidInput(f"{bundle.path}: metadata.devit.{field} {problem}")


def _part_name(bundle: Bundle, value: Any, field: str) -> str:
    names = [p.name for p in bundle.manifest.parts]
    if not isinstance(value, str) or value not in names:
        raise _fail(bundle, field, f"must name a part of the bundle ({', '.join(names)}), got {value!r:.60}")
    return value


def _class_ids(bundle: Bundle, raw: Any, devices: int) -> tuple[tuple[int, ...], ...]:
    if not isinstance(raw, list) or len(raw) != devices:
        raise _fail(bundle, "partition", f"must list the class ids of each of the {devices} devices, got {raw!r:.60}")
    for i, group in enumerate(raw):
        if not isinstance(group, list) or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in group):
            raise _fail(bundle, f"partition[{i}]", f"must be a list of class ids (integers >= 0), got {group!r:.60}")
    return tuple(tuple(group) for group in raw)


def _submodel_io(bundle: Bundle, part: str, field: str) -> tuple[tuple[int, ...], int]:
    """(C, H, W) a sub-model part takes and the width of the feature it gives, as its manifest declares."""
    spec = bundle.part(part)
    if len(spec.inputs) != 1 or len(spec.inputs[0].shape) != 4:
        raise InvalidInput(f"{bundle.path}: sub-model {part!r} ({field}) must take one image batch (B, C, H, W)")
    if len(spec.outputs) != 1 or len(spec.outputs[0].shape) != 2:
        raise InvalidInput(f"{bundle.path}: sub-model {part!r} ({field}) must give one feature batch (B, width)")
    return tuple(spec.inputs[0].shape[1:]), int(spec.outputs[0].shape[1])


def read_devit_layout(bundle: Bundle) -> DeViTLayout:
    """Read and check a DeViT bundle's metadata against its manifest; every problem names the field."""
    from coinfer.core.models._config import config_for_arch
    from coinfer.core.models.fusion import ARCH as FUSION_ARCH, FusionConfig

    if bundle.kind != DEVIT_KIND:
        raise InvalidInput(f"bundle {bundle.path} is of kind {bundle.kind!r}, not a DeViT bundle")
    info = bundle.metadata.get("devit")
    if not isinstance(info, dict):
        raise InvalidInput(f"{bundle.path}: metadata.devit must be an object describing the DeViT parts")
    parts = info.get("device_parts")
    if not isinstance(parts, list) or len(parts) < 2:
        raise _fail(bundle, "device_parts", f"must list at least 2 sub-model parts, got {parts!r:.60}")
    submodels = tuple(_part_name(bundle, p, f"device_parts[{i}]") for i, p in enumerate(parts))
    if len(set(submodels)) != len(submodels):
        raise _fail(bundle, "device_parts", f"names a part twice: {list(submodels)}")
    if "num_devices" in info and info["num_devices"] != len(submodels):
        raise _fail(bundle, "num_devices", f"is {info['num_devices']!r:.20} but device_parts lists {len(submodels)}")
    fusion_part = _part_name(bundle, info.get("fusion_part", FUSION_PART), "fusion_part")
    names = info.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _fail(bundle, "class_names", f"must be a list of strings, got {names!r:.60}")
    try:
        fusion_config = config_for_arch(FusionConfig, bundle.part(fusion_part).config, FUSION_ARCH)
    except InvalidInput as exc:
        raise InvalidInput(f"{bundle.path}: part {fusion_part!r} (metadata.devit.fusion_part) is not a fusion head: {exc}") from exc
    if fusion_config.num_devices != len(submodels):
        raise InvalidInput(
            f"{bundle.path}: {len(submodels)} sub-model parts for a fusion head of {fusion_config.num_devices} devices"
        )
    io = [_submodel_io(bundle, p, f"device_parts[{i}]") for i, p in enumerate(submodels)]
    shapes = {shape for shape, _ in io}
    if len(shapes) != 1:
        raise InvalidInput(f"{bundle.path}: the sub-models take images of different shapes {sorted(shapes)}")
    widths = tuple(width for _, width in io)
    if widths != fusion_config.feature_dims:
        raise InvalidInput(f"{bundle.path}: sub-model widths {widths} do not match the fusion head's {fusion_config.feature_dims}")
    return DeViTLayout(
        model_name=str(bundle.metadata.get("model_name") or bundle.name),
        submodel_parts=submodels,
        fusion_part=fusion_part,
        partition=_class_ids(bundle, info.get("partition"), len(submodels)),
        class_names=tuple(names),
        image_shape=next(iter(shapes)),  # type: ignore[arg-type]
        feature_dims=widths,
        num_classes=fusion_config.num_classes,
    )


def write_devit_bundle(
    path: str | Path,
    submodels: Sequence,
    fusion,
    partition: Sequence[Sequence[int]],
    metadata: Mapping[str, Any],
    report_json: str,
    overwrite: bool = False,
) -> Bundle:
    """Write the bundle atomically (nothing is left behind if anything fails)."""
    from coinfer.core.models.fusion import fusion_input_names

    parts = []
    for i, model in enumerate(submodels):
        cfg = model.config
        parts.append(
            PartToWrite(
                name=device_part(i),
                tensors=model.state_dict(),
                role=SUBMODEL_ROLE,
                config=model.config_dict(),
                inputs=[TensorSpec(IMAGE_INPUT, "FP32", (-1, cfg.in_chans, cfg.image_size, cfg.image_size))],
                outputs=[TensorSpec(CLS_FEATURE, "FP32", (-1, cfg.embed_dim))],
            )
        )
    widths = fusion.config.feature_dims
    names = fusion_input_names(len(widths))
    parts.append(
        PartToWrite(
            name=FUSION_PART,
            tensors=fusion.state_dict(),
            role=FUSION_ROLE,
            config=fusion.config_dict(),
            inputs=[
                *(TensorSpec(name, "FP32", (-1, d)) for name, d in zip(names, widths)),
                TensorSpec(names[-1], "BOOL", (-1, len(widths))),
            ],
            outputs=[TensorSpec(LOGITS_OUTPUT, "FP32", (-1, fusion.config.num_classes))],
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
        kind=DEVIT_KIND,
        parts=parts,
        metadata=meta,
        extra_files={"report.json": report_json},
        overwrite=overwrite,
    )


@dataclass
class DeViTDeployment:
    """A loaded DeViT bundle: modules in evaluation mode plus its checked description."""

    layout: DeViTLayout
    submodels: list
    """Head-less ViTs, device order; each maps images to its CLS feature."""
    fusion: Any
    """The DeViTFusion head."""
    metadata: dict[str, Any]
    """The bundle's full metadata."""

    @property
    def partition(self) -> list[list[int]]:
        """Class ids of each device."""
        return [list(g) for g in self.layout.partition]

    @property
    def class_names(self) -> list[str]:
        return list(self.layout.class_names)


def load_devit(bundle: Bundle | str | Path) -> DeViTDeployment:
    """Rebuild every sub-model and the fusion head of a DeViT bundle (hashes verified, strict loads)."""
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    layout = read_devit_layout(bundle)
    return DeViTDeployment(
        layout=layout,
        submodels=[bundle.load_module(name) for name in layout.submodel_parts],
        fusion=bundle.load_module(layout.fusion_part),
        metadata=dict(bundle.metadata),
    )
