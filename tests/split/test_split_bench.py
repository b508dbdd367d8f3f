"""The split benchmark: target arithmetic on hand-made rows, and a tiny real run."""

from __future__ import annotations

import json
from pathlib import Path

from coinfer.core.training import TrainConfig, with_loop
from coinfer.bench.split import BenchConfig, run_benchmark
from coinfer.bench.split_targets import Row, compression_target, equal_payload
from coinfer.server.split.train import BottleneckTrainConfig


def row(point, design, bits, accuracy, payload, compression=10.0, reduction=4.0) -> Row:
    return Row(point, f"p{point}", design, reduction, (1, 1), bits, accuracy, payload, compression)


def test_compression_target_needs_both_the_ratio_and_the_accuracy() -> None:
    rows = [
        row(1, "ours", 4, 0.895, 100, compression=70),  # 0.5 pt below: counts
        row(1, "paper", 4, 0.80, 90, compression=75),
        row(2, "ours", 2, 0.85, 50, compression=130),  # 5 pt below: does not
        row(2, "ours", 8, 0.90, 400, compression=20),  # accurate but not compressed enough
        row(3, "ours", 2, 0.89, 50, compression=64.0),  # exactly 1 pt below, exactly 64x: counts
    ]
    result = compression_target(rows, backbone_accuracy=0.90)
    assert result.points_met == [1, 3]
    assert result.best_per_point[1].design == "ours" and result.best_per_point[2].bits == 2


def test_equal_payload_compares_against_our_best_affordable_row() -> None:
    rows = [
        row(1, "paper", 8, 0.80, 100), row(1, "paper", 2, 0.60, 40),
        row(1, "ours", 8, 0.85, 104),  # within 5% of 100: affordable there
        row(1, "ours", 2, 0.55, 40),
        row(2, "paper", 8, 0.80, 100),
        row(2, "ours", 8, 0.95, 120),  # better but 20% bigger: not equal payload
    ]
    by_point = {e.point: e for e in equal_payload(rows)}
    assert (by_point[1].wins, by_point[1].losses) == (1, 1) and not by_point[1].ours_better
    assert by_point[1].mean_gap_pt == 0.0  # +5 pt and -5 pt
    assert by_point[2].losses == 1 and by_point[2].mean_gap_pt is None


def test_tiny_benchmark_writes_rows_targets_and_plots(tmp_path: Path) -> None:
    config = BenchConfig(
        dataset="digits", backbones=("vgg11",), train_images=0, bottleneck_train_images=0, test_images=200,
        backbone_train=TrainConfig(epochs=2, lr=3e-3, batch_size=64, progress=False),
        bottleneck_train=with_loop(BottleneckTrainConfig(recon_steps=15, distill_steps=5, qat_bits=(8, 2)), batch_size=64),
        reductions=(4.0,), bits=(8, 2), progress=False,
    )
    summary = run_benchmark(tmp_path, quick=True, config=config)
    saved = json.loads((tmp_path / "split.json").read_text())
    assert saved["targets"] == summary["targets"] and len(summary["targets"]) == 3
    result = summary["backbones"]["vgg11"]
    rows = result["rows"]
    assert {r["point"] for r in rows} == {1, 2, 3, 4}
    assert {(r["design"], r["bits"]) for r in rows} == {("paper", 8), ("paper", 2), ("ours", 8), ("ours", 2)}
    for r in rows:
        fp32 = result["point_fp32_bytes"][r["point"]]
        assert abs(r["compression"] - fp32 / r["payload_bytes"]) < 0.01
    # Fewer bits never cost more bytes for the same bottleneck.
    for a in rows:
        for b in rows:
            if (a["point"], a["design"], a["reduction"]) == (b["point"], b["design"], b["reduction"]) and a["bits"] < b["bits"]:
                assert a["payload_bytes"] <= b["payload_bytes"]
    assert Path(result["png"]).stat().st_size > 10_000
    for target in summary["targets"]:
        assert {"name", "ours", "target", "anchor", "met"} <= target.keys()
    # A rerun with the same settings reuses the trained backbone and every measured row.
    again = run_benchmark(tmp_path, quick=True, config=config)
    assert again["backbones"]["vgg11"]["backbone_reused"]
    assert again["backbones"]["vgg11"]["rows_reused"] == len(rows)
    assert again["backbones"]["vgg11"]["rows"] == rows
    assert again["backbones"]["vgg11"]["backbone_accuracy"] == result["backbone_accuracy"]
    # Other bottleneck settings measure again.
    import dataclasses

    changed = dataclasses.replace(config, bottleneck_train=dataclasses.replace(config.bottleneck_train, recon_steps=16))
    third = run_benchmark(tmp_path, quick=True, config=dataclasses.replace(changed, reductions=(4.0,)))
    assert third["backbones"]["vgg11"]["rows_reused"] == 0
