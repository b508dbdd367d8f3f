"""The real-shape benchmark's plumbing on a 32-px, 2-block timm-format ViT (the 224-px figures are
`make bench`'s): import, decompose and serving through 4 edges as processes, and the runs that do
not fit the machine reported instead of skipped."""

import json

import pytest

from coinfer.bench import dekd_shape
from coinfer.bench.dekd_shape import ShapeSettings, TeacherRun, make_imagefolder, run_benchmark, run_child
from coinfer.bench.suite import render_report
from coinfer.core.data import load_dataset
from coinfer.server.dekd.timm_vit import TimmViTShape

TINY = TimmViTShape(embed_dim=64, depth=2, num_heads=1, patch_size=8, image_size=32)
FAST = ("--quick", "--distill-epochs", "1", "--ensemble-epochs", "1", "--no-baseline")


def _settings(per_class: int = 10) -> ShapeSettings:
    return ShapeSettings(teachers=(TeacherRun("tiny", TINY, per_class, 10.0),), source="digits",
                         decompose_flags=FAST, requests=3)


def test_the_image_folder_is_rgb_at_the_teachers_size_and_reused(tmp_path):
    root = make_imagefolder(tmp_path / "images", "digits", 32, classes=4, per_class=5, seed=0)
    splits = load_dataset("imagefolder", root)
    assert splits.image_shape == (3, 32, 32) and splits.num_classes == 4
    assert len(splits.train) + len(splits.val) + len(splits.test) == 20
    x = splits.train.x.astype(int)
    assert (x[:, 0] != x[:, 1]).any()  # tinted: the channels differ
    stamp = (root / "class-0" / "0000.png").stat().st_mtime_ns
    make_imagefolder(tmp_path / "images", "digits", 32, classes=4, per_class=5, seed=0)
    assert (root / "class-0" / "0000.png").stat().st_mtime_ns == stamp
    make_imagefolder(tmp_path / "images", "digits", 32, classes=4, per_class=4, seed=0)
    assert not (root / "class-0" / "0004.png").exists()


@pytest.mark.slow
def test_a_timm_checkpoint_goes_from_import_to_answers_through_four_edges(tmp_path, capsys):
    result = run_benchmark(tmp_path, settings=_settings())
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["targets"] == json.loads(json.dumps(result["targets"]))
    (teacher,) = written["teachers"]
    assert teacher["notes"] == [] and teacher["import_run"]["returncode"] == 0 and teacher["decompose_run"]["returncode"] == 0
    assert teacher["decompose_run"]["max_rss_bytes"] > 50 << 20 and teacher["decompose_run"]["cpu_s"] > 0
    report = teacher["report"]
    assert report["devices"] == 4 and len(teacher["submodel_macs"]) == 4
    # the counted MACs are report.json's analytic ones
    assert teacher["submodel_macs"] == [d["macs"] for d in report["ensemble"]["devices"]]
    assert teacher["teacher_macs"] == report["teacher"]["macs"]
    assert set(teacher["steps"]) == {"distill", "ensemble"} and teacher["steps"]["distill"]["images_per_step"] <= 7
    serving = teacher["serving"]
    assert serving["image_shape"] == [3, 32, 32] and serving["logits_shapes"] == [[1, 4]] and serving["degraded"] == 0
    assert all(status == 0 for status in serving["exit_statuses"].values())
    rows = {row["name"]: row for row in written["targets"]}
    speedup = next(r for n, r in rows.items() if "speedup" in n)
    assert speedup["ours"] == pytest.approx(report["speedup"]) and speedup["target"] == ">= 4x" and "2.89x" in speedup["anchor"]
    gpu = next(r for n, r in rows.items() if "GPU" in n)
    assert gpu["ours"] is None and gpu["ours_text"].startswith("not measured")
    assert "2.89x" in capsys.readouterr().out
    rendered = render_report({"dekd_shape": {"status": "ok", **written}}, quick=False)
    assert gpu["ours_text"] in rendered and "tiny teacher MACs / largest sub-model MACs" in rendered


def test_a_run_that_would_not_fit_in_memory_is_reported_not_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(dekd_shape, "available_memory_bytes", lambda: 1 << 20)
    result = run_benchmark(tmp_path, settings=_settings(per_class=5))
    (teacher,) = result["teachers"]
    assert teacher["decompose_run"] is None and teacher["teacher_latency_ms"] > 0
    assert teacher["notes"] and teacher["notes"][0].startswith("decompose not run: it needs an estimated")
    texts = [row["ours_text"] for row in result["targets"]]
    assert sum("decompose not run" in t for t in texts) >= 6
    assert not list(tmp_path.glob("tiny/devit-*"))


def test_a_child_past_its_time_limit_is_stopped_and_said_so(tmp_path):
    run = run_child(["teacher", "import", "--from", "nothing", "--out", str(tmp_path / "t")], tmp_path / "log", time_limit_s=0.05)
    assert run.returncode is None and "stopped at its" in run.why_not(1.0)
    assert not (tmp_path / "t").exists()


def test_the_memory_estimate_grows_with_width_and_images():
    from coinfer.server.dekd.timm_vit import TIMM_VITS

    small, base = TIMM_VITS["vit_small_patch16_224"], TIMM_VITS["vit_base_patch16_224"]
    estimate = dekd_shape.decompose_memory_estimate_bytes
    assert estimate(base, 4, 112, 28) > estimate(small, 4, 112, 28) > estimate(small, 4, 56, 14)
    # importance runs in capped micro-batches: a large group does not need 128 images' activations at once
    assert estimate(base, 4, 400, 100, train_batch=1) < 5 << 30
    # the ensemble stage trains the 4 sub-models together: its batch counts
    assert estimate(base, 4, 400, 100, train_batch=128) > estimate(base, 4, 400, 100, train_batch=64) > 8 << 30
