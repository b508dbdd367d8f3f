"""The benchmark's plumbing on a tiny budget (its figures are for `make bench`, not for tests)."""

import json
from dataclasses import replace

import pytest

from coinfer.bench import dekd as bench
from coinfer.bench.dekd import QUICK, AccuracyRow, accuracy_targets, run_benchmark

TINY = replace(QUICK, teacher_epochs=1, stage_epochs=1, teacher_arch="vit-nano")


@pytest.fixture(scope="module")
def benched(tmp_path_factory):
    from coinfer.core.measure import torch_threads

    out = tmp_path_factory.mktemp("bench")
    with torch_threads(1):  # a module fixture runs before the per-test one_thread fixture
        return out, run_benchmark(out, settings=TINY, progress=False, device="cpu")


def test_the_benchmark_reports_every_target_beside_devits_figure(benched, capsys):
    out, result = benched
    written = json.loads((out / "results.json").read_text())
    assert written["targets"] == json.loads(json.dumps(result["targets"]))
    names = [row["name"] for row in written["targets"]]
    assert len(names) == 9 and sum(n.startswith("digits:") for n in names) == 3
    assert any("speedup" in n for n in names) and any("balance" in n for n in names)
    for row in written["targets"]:
        assert isinstance(row["ours"], float) and row["anchor"] and row["met"] in (True, False, None)
    [row] = written["accuracy"]
    assert row["dataset"] == "digits" and row["train_images"] == 1259 and 0 <= row["reference_cnn"] <= 1
    assert written["reports"]["random"]["partition_method"] == "random"
    assert written["reports"]["hetero"]["ensemble"]["devices"][2]["speed"] == 0.5
    assert (out / "accuracy_vs_size.png").stat().st_size > 1000 and written["left_out"] == []


def test_a_second_run_reuses_every_cached_teacher_and_run(benched, monkeypatch):
    out, first = benched
    from coinfer.server.dekd import pipeline, teacher

    monkeypatch.setattr(pipeline, "decompose", lambda *a, **k: pytest.fail("a cached run was retrained"))
    monkeypatch.setattr(teacher, "train_teacher", lambda *a, **k: pytest.fail("a cached teacher was retrained"))
    again = run_benchmark(out, settings=TINY, progress=False, device="cpu")
    assert again["accuracy"] == first["accuracy"] and again["datasets"]["digits"]["teacher_train_seconds"] == 0.0


class _Retrained(Exception):
    pass


def test_a_changed_recipe_retrains(benched, monkeypatch):
    out, _ = benched
    from coinfer.server.dekd import teacher

    def retrain(*args, **kwargs):
        raise _Retrained

    monkeypatch.setattr(teacher, "train_teacher", retrain)
    with pytest.raises(_Retrained):
        run_benchmark(out, settings=replace(TINY, teacher_epochs=2), progress=False, device="cpu")


def test_a_changed_teacher_stem_retrains_with_that_stem(benched, monkeypatch):
    out, _ = benched
    from coinfer.server.dekd import teacher

    def retrain(splits, config, train):
        assert config.stem_channels == (24, 48)  # 8 px -> 4 -> the 2 x 2 grid of 4-px patches
        raise _Retrained

    monkeypatch.setattr(teacher, "train_teacher", retrain)
    with pytest.raises(_Retrained):
        run_benchmark(out, settings=replace(TINY, teacher_stem="conv"), progress=False, device="cpu")


def test_only_some_datasets_leaves_the_deployment_rows_out_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "_teacher", lambda *a, **k: pytest.fail("ran a dataset it was not asked for"))
    result = run_benchmark(tmp_path, settings=TINY, progress=False, device="cpu", only=("nothing",))
    assert result["accuracy"] == [] and "deployment rows" in result["left_out"][0]


def test_each_dataset_has_the_three_targets():
    row = AccuracyRow("x", 100, teacher=0.90, ensemble=0.895, single_student=0.89, reference_cnn=0.91,
                      teacher_steps=1, ensemble_steps=1)
    gap, lead, cnn = accuracy_targets(row)
    assert gap.met and gap.ours == pytest.approx(-0.5) and lead.met and not cnn.met and cnn.ours == pytest.approx(-1.0)
