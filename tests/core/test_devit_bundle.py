"""The DeViT bundle is read and checked in one place: every damaged description is refused naming the field.

The coordinator (`DeViTServing`) and the DEKD tools (`load_devit`) both go through
`read_devit_layout`, so each refusal below must read the same from both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from coinfer.core.bundle import load_bundle
from coinfer.core.devit_bundle import load_devit, read_devit_layout, write_devit_bundle
from coinfer.core.errors import InvalidInput
from coinfer.core.models.fusion import DeViTFusion, FusionConfig
from coinfer.core.models.vit import ViTConfig, VisionTransformer


@pytest.fixture(scope="module")
def devit_path(tmp_path_factory) -> Path:
    """Three tiny untrained sub-models of widths 8, 8, 12 and their fusion head."""
    torch.manual_seed(0)
    widths = (8, 8, 12)
    submodels = [
        VisionTransformer(ViTConfig(image_size=8, in_chans=1, patch_size=4, embed_dim=w, depth=1, num_heads=2, mlp_ratio=2.0, num_classes=0))
        for w in widths
    ]
    fusion = DeViTFusion(FusionConfig(widths, embed_dim=16, num_classes=10))
    path = tmp_path_factory.mktemp("devit") / "tiny-devit"
    write_devit_bundle(path, submodels, fusion, [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]],
                       {"model_name": "tiny", "devit": {"class_names": [str(c) for c in range(10)]}}, "{}")
    return path


def test_a_written_bundle_reads_back_and_loads(devit_path) -> None:
    layout = read_devit_layout(load_bundle(devit_path))
    assert layout.model_name == "tiny" and layout.submodel_parts == ("device-0", "device-1", "device-2")
    assert layout.feature_dims == (8, 8, 12) and layout.image_shape == (1, 8, 8) and layout.num_classes == 10
    assert layout.partition[2] == (6, 7, 8, 9) and layout.class_names[9] == "9"
    deployment = load_devit(devit_path)
    x = torch.rand(2, 1, 8, 8)
    with torch.inference_mode():
        logits = deployment.fusion.forward_available({i: m(x) for i, m in enumerate(deployment.submodels)})
    assert logits.shape == (2, 10) and deployment.partition == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]


def _devit(m: dict) -> dict:
    return m["metadata"]["devit"]


def _part(m: dict, name: str) -> dict:
    return next(p for p in m["parts"] if p["name"] == name)


DAMAGE = {
    "not an object": (lambda m: m["metadata"].update(devit=["device-0"]), "metadata.devit"),
    "no device parts": (lambda m: _devit(m).pop("device_parts"), "metadata.devit.device_parts"),
    "one device part": (lambda m: _devit(m).update(device_parts=["device-0"]), "metadata.devit.device_parts"),
    "unknown part": (lambda m: _devit(m)["device_parts"].__setitem__(1, "device-9"), "metadata.devit.device_parts[1]"),
    "part not a string": (lambda m: _devit(m)["device_parts"].__setitem__(2, 2), "metadata.devit.device_parts[2]"),
    "part twice": (lambda m: _devit(m)["device_parts"].__setitem__(1, "device-0"), "metadata.devit.device_parts"),
    "device count": (lambda m: _devit(m).update(num_devices=4), "metadata.devit.num_devices"),
    "unknown fusion part": (lambda m: _devit(m).update(fusion_part="fuse"), "metadata.devit.fusion_part"),
    "fusion part is a sub-model": (lambda m: _devit(m).update(fusion_part="device-1"), "metadata.devit.fusion_part"),
    "no partition": (lambda m: _devit(m).pop("partition"), "metadata.devit.partition"),
    "partition of two devices": (lambda m: _devit(m)["partition"].pop(), "metadata.devit.partition"),
    "class id not an integer": (lambda m: _devit(m)["partition"][0].__setitem__(0, "0"), "metadata.devit.partition[0]"),
    "negative class id": (lambda m: _devit(m)["partition"][1].__setitem__(0, -3), "metadata.devit.partition[1]"),
    "class names": (lambda m: _devit(m).update(class_names="0123456789"), "metadata.devit.class_names"),
    "fusion of another arch": (lambda m: _part(m, "fusion")["config"].update(arch="vit"), "metadata.devit.fusion_part"),
    "fewer parts than the fusion": (lambda m: (_devit(m)["device_parts"].pop(), _devit(m).pop("num_devices")),
                                    "2 sub-model parts for a fusion head of 3 devices"),
    "sub-model width": (lambda m: _part(m, "device-2")["outputs"][0].update(shape=[-1, 16]), "sub-model widths (8, 8, 16)"),
    "sub-model input": (lambda m: _part(m, "device-1")["inputs"][0].update(shape=[-1, 64]), "sub-model 'device-1'"),
    "kind": (lambda m: m.update(kind="split"), "not a DeViT bundle"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_each_damaged_description_is_refused_naming_the_field(devit_path, tmp_path, damage) -> None:
    from coinfer.server.devit_service import DeViTServing

    damaged = tmp_path / "damaged"
    shutil.copytree(devit_path, damaged)
    manifest = json.loads((damaged / "manifest.json").read_text())
    mutate, field = DAMAGE[damage]
    mutate(manifest)
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(damaged)
    with pytest.raises(InvalidInput) as read:
        read_devit_layout(bundle)
    assert field in str(read.value)
    # The coordinator and the DEKD loader refuse it with the same words.
    for refuse in (lambda: DeViTServing(bundle), lambda: load_devit(damaged)):
        with pytest.raises(InvalidInput) as other:
            refuse()
        assert str(other.value) == str(read.value)
