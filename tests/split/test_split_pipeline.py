"""`coinfer split` end to end on a tiny digits run: report, bundle, and the runtime path through it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from coinfer.core.bundle import load_bundle
from coinfer.core.codec import encode, from_bytes, to_bytes
from coinfer.core.data import load_dataset, to_float
from coinfer.core.errors import InvalidInput, NotFound
from coinfer.core.split_point import DeviceHalf, ServerHalf, load_samples, load_split_plan
from coinfer.server.split.pipeline import run_split

from split_helpers import tiny_config
from quantised import assert_accuracy_reproduced, assert_float_close, expected_logits, payload_slack_bytes, split_halves

REQUIRED_POINT_FIELDS = {"index", "name", "accuracy", "feature_fp32_bytes", "payload_bytes", "compression",
                         "head_macs", "head_latency_ms"}


def test_report_json_has_the_issue_fields_and_consistent_figures(split_run) -> None:
    path, report = split_run
    data = json.loads((path / "report.json").read_text())
    assert {"backbone", "dataset", "backbone_accuracy", "raw_input_bytes", "points"} <= data.keys()
    assert data["backbone"] == "resnet18" and data["dataset"] == "digits" and data["raw_input_bytes"] == 64
    points = data["points"]
    assert [p["index"] for p in points] == [0, 1, 2, 3, 4, 5]
    for p in points:
        assert REQUIRED_POINT_FIELDS <= p.keys()
        assert 0.0 <= p["accuracy"] <= 1.0 and p["head_latency_ms"] > 0
        if p["payload_bytes"]:
            assert p["compression"] == pytest.approx(p["feature_fp32_bytes"] / p["payload_bytes"], rel=1e-3)
    assert points[0]["payload_bytes"] == len(to_bytes(encode(np.zeros((1, 1, 8, 8), np.uint8))))
    assert points[-1]["payload_bytes"] == 0 and points[-1]["compression"] is None
    assert points[0]["accuracy"] == points[-1]["accuracy"] == data["backbone_accuracy"]
    macs = [p["head_macs"] for p in points]
    assert macs[0] == 0 and all(a < b for a, b in zip(macs[1:-1], macs[2:-1]))
    for p in points[1:-1]:
        # Both designs were tried and the validation-better one was kept.
        assert {c["design"] for c in p["candidates"]} == {"paper", "ours"}
        chosen = max(p["candidates"], key=lambda c: (c["val_accuracy"], -c["payload_bytes"]))
        assert p["design"] == chosen["design"] and p["accuracy"] == chosen["test_accuracy"]
        assert p["feature_fp32_bytes"] / p["payload_bytes_max"] >= 16.0 or p["latent_shape"][1] == 1 \
            or p["payload_bytes_max"] <= 2 * 47 + 1  # the header floor on tiny features


def test_bundle_parts_rebuild_and_the_wire_path_reproduces_the_report(split_run) -> None:
    path, report = split_run
    bundle = load_bundle(path)
    assert bundle.kind == "split-points"
    plan = load_split_plan(bundle)
    splits = load_dataset("digits")
    point = report.points[2]
    device = DeviceHalf.from_bundle(bundle, point.index, plan)
    server = ServerHalf.from_bundle(bundle, point.index, plan)
    payloads = [device(image[None])[0] for image in splits.test.x]
    logits = np.concatenate([server([payload]) for payload in payloads])
    sizes = np.array([len(payload) for payload in payloads])
    # One message per image through the real codec gives the report's figures. The report ran the
    # same parts on batches: a code may differ only where a feature sits on a rounding boundary,
    # so a prediction only where the bound leaves it undecided, a zlib size only for an image
    # with such a feature, and then by less than an uncompressed message.
    expected = expected_logits(split_halves(bundle, point.index), splits.test.x)
    expected.check(logits, f"point {point.index} on the wire")
    assert_accuracy_reproduced(logits, splits.test.y, point.accuracy, expected, f"point {point.index}")
    slack = payload_slack_bytes(expected, payloads[0])
    assert abs(sizes.sum() - point.payload_bytes * len(sizes)) <= slack + 0.005 * len(sizes)  # reported to 0.01
    assert abs(int(sizes.min()) - point.payload_bytes_min) <= slack and abs(int(sizes.max()) - point.payload_bytes_max) <= slack


def test_first_and_last_points_are_the_plain_backbone(split_run) -> None:
    path, _ = split_run
    bundle = load_bundle(path)
    model = bundle.load_module("model")
    images, _ = load_samples(bundle)
    expected = model(to_float(images)).detach().numpy()
    upload, server = DeviceHalf.from_bundle(bundle, 0), ServerHalf.from_bundle(bundle, "input")
    local = DeviceHalf.from_bundle(bundle, "local")
    payloads = upload(images)
    assert len(payloads) == len(images)
    for payload in payloads:
        assert from_bytes(payload).datatype == "UINT8" and len(payload) == 64 + 39
    assert_float_close(server(payloads), expected, "images sent raw")
    assert local(images) == []
    assert_float_close(local.run(images), expected, "images run on the device")
    with pytest.raises(InvalidInput, match="entirely on the device"):
        ServerHalf.from_bundle(bundle, 5)
    with pytest.raises(NotFound, match="valid points"):
        DeviceHalf.from_bundle(bundle, 9)


def test_server_refuses_a_payload_of_the_wrong_shape(split_run) -> None:
    path, _ = split_run
    server = ServerHalf.from_bundle(load_bundle(path), 1)
    with pytest.raises(InvalidInput, match="shape"):
        server([to_bytes(encode(np.zeros((1, 3, 2, 2), np.float32), bits=4))])


def test_unknown_backbone_and_points_list_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as err:
        run_split(tiny_config(backbone="alexnet"), tmp_path / "a")
    assert all(name in str(err.value) for name in ("vgg11", "resnet18", "mobilenetv2", "vit"))
    with pytest.raises(NotFound) as err:
        run_split(tiny_config(points=(1, 9)), tmp_path / "b")
    assert "1 (stem)" in str(err.value) and "4 (" in str(err.value)
    with pytest.raises(NotFound, match="candidate points"):
        run_split(tiny_config(points=("local",)), tmp_path / "c")
    assert not any(tmp_path.iterdir())


def test_existing_bundle_is_not_overwritten_and_bad_weights_are_named(tmp_path: Path, split_run) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(InvalidInput, match="already exists"):
        run_split(tiny_config(), tmp_path / "taken")
    from safetensors.torch import save_file

    save_file({"conv1.weight": torch.zeros(3, 3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(InvalidInput, match="do not fit"):
        run_split(tiny_config(weights=str(tmp_path / "w.safetensors")), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_vit_tokens_with_weights_and_joint_finetune(tmp_path: Path, split_run) -> None:
    """A ViT bundle compresses tokens; given weights are used as they are; fine-tuning changes the head."""
    from safetensors.torch import save_file

    from coinfer.core.models import build_model
    from coinfer.server.split.backbones import backbone_config
    from coinfer.core.training import with_loop
    from coinfer.server.split.train import FinetuneConfig

    splits = load_dataset("digits")
    vit = build_model(backbone_config("vit", splits, 0.25))
    save_file(vit.state_dict(), str(tmp_path / "vit.safetensors"))
    config = tiny_config(backbone="vit", points=("2",), bottleneck="ours", weights=str(tmp_path / "vit.safetensors"),
                         finetune=with_loop(FinetuneConfig(steps=3), batch_size=32, progress=False))
    report = run_split(config, tmp_path / "vit")
    bundle = load_bundle(tmp_path / "vit")
    model = bundle.load_module("model")
    for key, value in vit.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    encoder = bundle.load_module("point2.encoder")
    assert encoder.config.layout == "tokens" and encoder.config.feature_size == 17
    head = bundle.load_module("point2.head")
    changed = [k for k, v in head.state_dict().items() if not torch.equal(v, vit.state_dict()[k])]
    assert changed  # the joint fine-tune moved the head away from the given weights
    p2 = report.points[1]
    assert p2.index == 2 and p2.latent_shape[1] == 17 and p2.design == "ours"
    images, _ = load_samples(bundle)
    logits = ServerHalf.from_bundle(bundle, 2)(DeviceHalf.from_bundle(bundle, 2)(images[:1]))
    assert logits.shape == (1, 10) and np.isfinite(logits).all()


def test_split_cli_errors_exit_2_with_the_valid_names(tmp_path: Path, capsys) -> None:
    from coinfer.cli import main

    assert main(["split", "--backbone", "alexnet", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "alexnet" in err and "mobilenetv2" in err and "Traceback" not in err
    assert main(["split", "--quick", "--points", "0", "--out", str(tmp_path / "y")]) == 2
    assert "candidate points" in capsys.readouterr().err


def test_quick_flags_build_the_expected_config() -> None:
    import argparse

    from coinfer.server.split.cli import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["split", "--quick", "--backbone", "vgg11", "--points", "1,3", "--bits", "2",
                              "--no-zlib", "--epochs", "2", "--out", "b"])
    config = config_from_args(args)
    assert config.dataset == "digits" and config.backbone == "vgg11" and config.points == ("1", "3")
    assert config.bits == 2 and config.compress is False and config.backbone_train.epochs == 2
    assert dataclasses.asdict(config)["bottleneck"] == "auto"


def test_the_backbone_is_the_same_for_a_seed_whatever_ran_before() -> None:
    from coinfer.core.training import TrainConfig
    from coinfer.server.split.pipeline import prepare_backbone

    splits = load_dataset("digits")
    config = tiny_config(backbone_train=TrainConfig(epochs=1, batch_size=256, progress=False), width_mult=0.125)
    first = prepare_backbone(config, splits)
    torch.rand(1000)  # the global generator moves on, as other work in the same process would move it
    second = prepare_backbone(config, splits)
    for name, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[name], value), name
