"""`coinfer decompose` and `coinfer teacher` end to end: a run that writes a usable bundle, and
bad input that fails cleanly (clear message, exit 2, nothing written)."""

import json

import numpy as np
import pytest
import torch

from coinfer.cli import main
from coinfer.core.data import load_dataset
from coinfer.core.devit_bundle import load_devit
from quantised import assert_accuracy_reproduced

FAST = ["--quick", "--distill-epochs", "2", "--ensemble-epochs", "1", "--baseline-epochs", "1", "--threads", "1", "--no-progress"]
"""Short stages; the fixture's run keeps the reference CNN, the bad-input runs never get that far."""


@pytest.fixture(scope="module")
def decomposed(tiny_teacher_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "bundle"
    code = main(["decompose", "--teacher", str(tiny_teacher_dir), "--devices", "4", "--out", str(out),
                 "--device-speeds", "1,1,0.5,0.5", *FAST])
    assert code == 0
    return out


def test_decompose_writes_a_bundle_and_a_complete_report(decomposed, digits):
    report = json.loads((decomposed / "report.json").read_text())
    for key in ("dataset", "num_classes", "devices", "partition", "teacher", "ensemble", "single_student", "speedup"):
        assert key in report
    assert report["dataset"] == "digits" and report["num_classes"] == 10 and report["devices"] == 4
    assert sorted(c for g in report["partition"] for c in g) == list(range(10))
    assert set(report["teacher"]) >= {"accuracy", "params", "macs", "latency_ms"}
    ens = report["ensemble"]
    assert set(ens) >= {"accuracy", "accuracy_missing_one", "latency_ms", "devices"}
    assert len(ens["accuracy_missing_one"]) == 4 and len(ens["devices"]) == 4
    for d in ens["devices"]:
        assert set(d) >= {"classes", "params", "macs", "latency_ms", "payload_bytes"}
        assert d["payload_bytes"] >= 4 * 32 and d["latency_ms"] > 0
    assert set(report["single_student"]) >= {"accuracy", "params", "latency_ms"}
    for acc in [report["teacher"]["accuracy"], ens["accuracy"], *ens["accuracy_missing_one"], report["single_student"]["accuracy"]]:
        assert 0.0 <= acc <= 1.0
    assert report["speedup"] == pytest.approx(report["teacher"]["latency_ms"] / ens["latency_ms"])
    assert ens["latency_ms"] == pytest.approx(max(d["scaled_latency_ms"] for d in ens["devices"]) + ens["fusion_latency_ms"])
    # the slower devices (speed 0.5) got smaller sub-models, and the larger groups went to the fast ones
    macs = [d["macs"] for d in ens["devices"]]
    assert max(macs[2:]) < min(macs[:2])
    assert min(len(g) for g in report["partition"][:2]) >= max(len(g) for g in report["partition"][2:])
    # same total parameters for the baseline (within 5 %)
    assert abs(report["single_student"]["params"] - ens["params"]) <= 0.05 * ens["params"]


def test_the_report_records_the_recipe_that_ran_and_the_reference_cnn(decomposed, digits):
    report = json.loads((decomposed / "report.json").read_text())
    recipe = report["recipe"]
    assert recipe["budget"] == "quick" and recipe["train_images"] == len(digits.train) and recipe["processes"] == 1
    assert recipe["device"] == "cpu" and recipe["online_teacher"] is True
    stages = recipe["stages"]
    assert len(stages["distill"]) == 4 and all(s["epochs"] == 2 and s["budget"] is None for s in stages["distill"])
    # digits are not mirrored; mixing as DeViT
    assert all(s["hflip"] is None and s["mixup_alpha"] == 0.8 for s in [*stages["distill"], stages["ensemble"]])
    ref = stages["reference cnn"]
    assert ref["budget"] == {"name": "quick", "scale": 1.0} and "sqrt" in ref["why"] and ref["steps"] >= ref["planned_steps"] // 2
    # --baseline-epochs replaces the equal-compute budget of the single student
    student = stages["single student"]
    assert student["epochs"] == 1 and student["planned_steps"] == -(-len(digits.train) // 64)
    assert report["reference"]["arch"] == "vgg11" and 0.0 <= report["reference"]["accuracy"] <= 1.0
    assert report["reference"]["params"] > 0 and report["reference"]["latency_ms"] > 0


def test_the_bundle_rebuilds_the_ensemble_and_fuses_with_a_device_missing(decomposed, digits):
    deployment = load_devit(decomposed)
    assert len(deployment.submodels) == 4 and deployment.partition == json.loads((decomposed / "report.json").read_text())["partition"]
    x = torch.from_numpy(digits.test.x[:64]).float() / 255
    with torch.no_grad():
        feats = {i: m(x) for i, m in enumerate(deployment.submodels)}
        full = deployment.fusion.forward_available(feats)
        partial = deployment.fusion.forward_available({i: f for i, f in feats.items() if i != 1})
    labels = digits.test.y[:64]
    assert full.shape == (64, 10) and not torch.equal(full, partial)
    report = json.loads((decomposed / "report.json").read_text())
    # the rebuilt ensemble is the one that was measured (same accuracy on the test split)
    xs = torch.from_numpy(digits.test.x).float() / 255
    with torch.no_grad():
        logits = deployment.fusion.forward_available({i: m(xs) for i, m in enumerate(deployment.submodels)})
    assert_accuracy_reproduced(logits.numpy(), digits.test.y, report["ensemble"]["accuracy"], what="rebuilt ensemble")
    assert np.isfinite(partial.numpy()).all() and labels.shape == (64,)


def _fails(args, capsys, *needles):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(
    "extra,needles",
    [
        (["--devices", "1"], ["--devices must be at least 2"]),
        (["--devices", "11"], ["11 devices but only 10 classes"]),
        (["--device-speeds", "1,0,1,1"], ["'0' is not a positive number"]),
        (["--device-speeds", "1,fast,1,1"], ["'fast' is neither a positive number"]),
        (["--device-speeds", "1,1"], ["2 speed(s) for 4 devices"]),
        (["--partition", "affinity", "--macs-ratio", "2"], ["--macs-ratio"]),
        pytest.param(["--device", "cuda"], ["no CUDA GPU"],
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of cuda without a GPU")),
    ],
)
def test_bad_requests_fail_before_anything_is_written(tiny_teacher_dir, tmp_path, capsys, extra, needles):
    out = tmp_path / "never"
    _fails(["decompose", "--teacher", str(tiny_teacher_dir), "--out", str(out), *FAST, *extra], capsys, *needles)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_budget_that_cannot_fit_one_epoch_is_refused_before_anything_is_written(tiny_teacher_dir, tmp_path, capsys,
                                                                                  monkeypatch):
    from coinfer.core import training

    monkeypatch.setitem(training.BUDGETS, "quick", 0.1)  # 0.18 epochs of digits' 1,259 training images
    out = tmp_path / "never"
    _fails(["decompose", "--teacher", str(tiny_teacher_dir), "--out", str(out), "--quick", "--threads", "1"], capsys,
           "budget 'quick' fits 0.18 of one epoch of 1,259 training images")
    _fails(["teacher", "train", "--budget", "quick", "--out", str(out)], capsys, "fits 0.18 of one epoch")
    _fails(["teacher", "train", "--steps", "3", "--out", str(out)], capsys, "3 steps cannot fit one epoch of 1,259 samples")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_teacher_that_does_not_fit_the_dataset_is_refused(tiny_teacher_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "other.npz"
    np.savez(data, x=rng.integers(0, 255, (40, 12, 12, 3), dtype=np.uint8), y=np.arange(40) % 5)
    out = tmp_path / "never"
    _fails(["decompose", "--teacher", str(tiny_teacher_dir), "--dataset", "npz", "--data-dir", str(data), "--out", str(out), *FAST],
           capsys, "does not fit dataset", "10 classes vs the dataset's 5", "1 input channel(s) vs the dataset's 3", "8 x 8 images vs the dataset's 12 x 12")
    assert not out.exists()


def test_a_tampered_or_missing_teacher_is_refused(tiny_teacher_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "teacher"
    shutil.copytree(tiny_teacher_dir, copy)
    part = copy / "teacher.safetensors"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    out = tmp_path / "never"
    _fails(["decompose", "--teacher", str(copy), "--out", str(out), *FAST], capsys, "sha256")
    _fails(["decompose", "--teacher", str(tmp_path / "nope"), "--out", str(out), *FAST], capsys, "manifest.json is missing")
    assert not out.exists()


def test_an_existing_output_is_not_overwritten_without_asking(decomposed, tiny_teacher_dir, capsys):
    before = (decomposed / "manifest.json").read_text()
    _fails(["decompose", "--teacher", str(tiny_teacher_dir), "--out", str(decomposed), *FAST], capsys, "already exists")
    assert (decomposed / "manifest.json").read_text() == before


def test_teacher_train_and_import_commands(tmp_path, capsys):
    from safetensors.torch import save_file

    out = tmp_path / "t"
    assert main(["teacher", "train", "--dataset", "digits", "--arch", "vit-nano", "--epochs", "1", "--batch-size", "64",
                 "--depth", "1", "--out", str(out), "--threads", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "teacher vit-nano on digits" in printed and "20 steps; 1 epochs as given" in printed
    assert "patches 4 px (2 x 2 patches), the default for 8-px images" in printed
    from coinfer.server.dekd.teacher import load_teacher

    model, meta = load_teacher(out)
    assert meta["dataset"] == "digits" and len(meta["val_accuracy_per_epoch"]) == 1 and model.config.depth == 1
    assert meta["stem"] == "patch: one 4 x 4 convolution" and model.config.stem_channels is None
    assert meta["recipe"]["steps"] == 20 and meta["recipe"]["samples_seen"] == len(load_dataset("digits").train)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    assert main(["teacher", "import", "--from", str(weights), "--out", str(tmp_path / "imported"), "--num-heads", "4",
                 "--dataset", "digits"]) == 0
    imported, meta = load_teacher(tmp_path / "imported")
    assert meta["test_accuracy"] >= 0 and imported.config.num_heads == 4
    stemmed = tmp_path / "stemmed"
    assert main(["teacher", "train", "--dataset", "digits", "--arch", "vit-nano", "--epochs", "1", "--batch-size", "64",
                 "--depth", "1", "--stem", "conv", "--out", str(stemmed), "--threads", "1", "--no-progress"]) == 0
    assert "stem conv: 3 x 3 stride-2 convolutions of 24, 48 channels" in capsys.readouterr().out
    model, meta = load_teacher(stemmed)
    assert model.config.stem_channels == (24, 48) and meta["stem"].startswith("conv")
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    from coinfer.core.errors import InvalidInput
    from coinfer.server.dekd.jobs import train_teacher_job

    with pytest.raises(InvalidInput, match="unknown stem 'resnet'; valid: patch, conv"):
        train_teacher_job(out=tmp_path / "y", stem="resnet", progress=False)
    assert not (tmp_path / "y").exists()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    _fails(["teacher", "import", "--from", str(broken), "--out", str(tmp_path / "x")], capsys, "not a valid safetensors")
    assert not (tmp_path / "x").exists()
