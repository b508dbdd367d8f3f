"""--device for the split pipeline and benchmark: CPU results unchanged, device bookkeeping, clear errors.

The CUDA tests run only where torch sees a GPU; the rest check what a CPU-only machine can: that
'cpu' trains exactly as before, that 'cuda' there is a clear InvalidInput, and that modules moved
to another device (the meta device stands in for a GPU) never take the backbone with them.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from coinfer.core.data import load_dataset
from coinfer.core.errors import InvalidInput
from coinfer.core.models import build_model
from coinfer.core.training import with_loop
from coinfer.server.split import sizing
from coinfer.server.split.backbones import backbone_config
from coinfer.bench.split import BenchConfig, _rows_key, _settings_key, build_parser, config_from_args
from coinfer.server.split.train import (
    BottleneckTrainConfig,
    FinetuneConfig,
    _device_copy,
    compute_point_features,
    evaluate_bottleneck,
    finetune_point,
    train_bottleneck,
)

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error given on a machine without a GPU")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
POINT = 2


@pytest.fixture(scope="module")
def setup():
    """(splits, untrained thin backbone, features at POINT): enough for the bookkeeping, in a second."""
    splits = load_dataset("digits")
    torch.manual_seed(0)
    backbone = build_model(backbone_config("resnet18", splits, 0.125)).eval()
    return splits, backbone, compute_point_features(backbone, POINT, splits, max_train_images=256)


def _train_cfg(**changes) -> BottleneckTrainConfig:
    return with_loop(BottleneckTrainConfig(recon_steps=6, distill_steps=4, qat_bits=(8, 4), ce_weight=0.5),
                     batch_size=32, progress=False, **changes)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _shares_parameters(segment: torch.nn.Module, backbone: torch.nn.Module) -> bool:
    ids = {id(p) for p in backbone.parameters()}
    return all(id(p) in ids for p in segment.parameters())


def test_cpu_device_trains_the_same_bottleneck_as_the_default(setup) -> None:
    splits, backbone, feats = setup
    assert BottleneckTrainConfig().loop.device == "cpu" and FinetuneConfig().loop.device == "cpu"
    again = compute_point_features(backbone, POINT, splits, max_train_images=256, device="cpu")
    assert torch.equal(again.train, feats.train) and torch.equal(again.train_teacher, feats.train_teacher)
    last = backbone.num_points - 1
    bcfg = sizing.for_reduction(feats.feature_shape, "ours", 8.0)
    tail = backbone.segment(POINT, last)
    default_ae, default_log = train_bottleneck(bcfg, feats, tail, _train_cfg())
    cpu_ae, cpu_log = train_bottleneck(bcfg, feats, tail, _train_cfg(device="cpu"))
    assert _same_state(default_ae, cpu_ae) and default_log == cpu_log
    assert len(cpu_log.recon_loss) == 6 and len(cpu_log.distill_loss) == 4
    assert all(p.device.type == "cpu" for p in cpu_ae.parameters())
    assert _shares_parameters(tail, backbone)  # the tail was used in place, not copied
    a = evaluate_bottleneck(default_ae, tail, feats.test, feats.test_labels, 4)
    b = evaluate_bottleneck(cpu_ae, tail, feats.test, feats.test_labels, 4)
    assert a == b


def test_cpu_finetune_matches_the_default_and_returns_cpu_parts(setup) -> None:
    splits, backbone, feats = setup
    bcfg = sizing.for_reduction(feats.feature_shape, "paper", 8.0)
    ae1, _ = train_bottleneck(bcfg, feats, backbone.segment(POINT, backbone.num_points - 1), _train_cfg())
    ae2 = copy.deepcopy(ae1)
    cfg = with_loop(FinetuneConfig(steps=3), batch_size=16, progress=False)
    head1, tail1 = finetune_point(backbone, ae1, POINT, splits, 4, cfg)
    head2, tail2 = finetune_point(backbone, ae2, POINT, splits, 4, with_loop(cfg, device="cpu"))
    assert _same_state(head1, head2) and _same_state(tail1, tail2) and _same_state(ae1, ae2)
    for module in (head2, tail2, ae2):
        assert all(t.device.type == "cpu" for t in module.state_dict().values())
    assert not _shares_parameters(tail2, backbone)  # fine-tuning works on a copy


def test_a_device_copy_never_takes_the_backbone_along(setup) -> None:
    _, backbone, _ = setup
    tail = backbone.segment(POINT, backbone.num_points - 1)
    assert _device_copy(tail, torch.device("cpu")) is tail
    moved = _device_copy(tail, torch.device("meta"))  # stands in for a GPU
    assert all(p.device.type == "meta" for p in moved.parameters())
    assert all(t.device.type == "cpu" for t in backbone.state_dict().values())
    assert all(t.device.type == "cpu" for t in tail.state_dict().values()) and _shares_parameters(tail, backbone)


def test_evaluation_refuses_modules_off_the_cpu(setup) -> None:
    _, backbone, feats = setup
    bcfg = sizing.for_reduction(feats.feature_shape, "paper", 8.0)
    ae, _ = train_bottleneck(bcfg, feats, backbone.segment(POINT, backbone.num_points - 1), _train_cfg())
    tail = _device_copy(backbone.segment(POINT, backbone.num_points - 1), torch.device("meta"))
    with pytest.raises(InvalidInput, match="tail is on meta"):
        evaluate_bottleneck(ae, tail, feats.test, feats.test_labels, 4)


@needs_no_gpu
def test_cuda_without_a_gpu_is_a_clear_error(setup) -> None:
    splits, backbone, feats = setup
    bcfg = sizing.for_reduction(feats.feature_shape, "ours", 8.0)
    tail = backbone.segment(POINT, backbone.num_points - 1)
    with pytest.raises(InvalidInput, match="cuda"):
        train_bottleneck(bcfg, feats, tail, _train_cfg(device="cuda"))
    with pytest.raises(InvalidInput, match="cuda"):
        compute_point_features(backbone, POINT, splits, max_train_images=64, device="cuda")
    ae, _ = train_bottleneck(bcfg, feats, tail, _train_cfg())
    with pytest.raises(InvalidInput, match="cuda"):
        finetune_point(backbone, ae, POINT, splits, 4, with_loop(FinetuneConfig(steps=1), progress=False, device="cuda"))
    assert all(p.device.type == "cpu" for p in ae.parameters())


def test_bench_flags_land_in_the_config_and_leave_the_defaults_alone() -> None:
    args = build_parser().parse_args(["--device", "cuda", "--reductions", "3,12.5", "--distill-steps", "7",
                                      "--recon-steps", "9", "--backbones", "vgg11", "--data-dir", "d"])
    config = config_from_args(args)
    assert config.device == "cuda" and config.reductions == (3.0, 12.5) and config.backbones == ("vgg11",)
    assert config.data_dir == "d"
    assert (config.bottleneck_train.recon_steps, config.bottleneck_train.distill_steps) == (9, 7)
    assert config.bottleneck_train.qat_bits == (8, 4, 2)  # the rest of the bottleneck training is kept
    default = BenchConfig()
    assert default.device == "auto" and default.reductions == (5.0, 10.0, 20.0)
    assert (default.bottleneck_train.recon_steps, default.bottleneck_train.distill_steps) == (600, 1200)
    plain = config_from_args(build_parser().parse_args([]))
    assert plain.device == "auto" and plain.reductions == default.reductions
    assert plain.bottleneck_train == default.bottleneck_train
    quick = config_from_args(build_parser().parse_args(["--quick", "--distill-steps", "3"]))
    assert quick.dataset == "digits" and quick.bottleneck_train.distill_steps == 3
    assert quick.bottleneck_train.recon_steps == 100 and quick.reductions == (4.0, 16.0)


@pytest.mark.parametrize("argv", [["--device", "tpu"], ["--reductions", "4,x"], ["--reductions", "0.5"],
                                  ["--distill-steps", "-1"], ["--recon-steps", "2.5"]])
def test_bench_rejects_bad_flags(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2 and argv[0] in capsys.readouterr().err


def test_the_device_is_not_part_of_the_cache_keys() -> None:
    cpu = BenchConfig()
    gpu = dataclasses.replace(cpu, device="cuda",
                              backbone_train=dataclasses.replace(cpu.backbone_train, device="cuda"),
                              bottleneck_train=with_loop(cpu.bottleneck_train, device="cuda"))
    assert _settings_key(gpu, "resnet18") == _settings_key(cpu, "resnet18")
    assert _rows_key(gpu, "resnet18") == _rows_key(cpu, "resnet18")
    assert "device" not in str(_rows_key(gpu, "resnet18"))
    # ...while a setting that changes the experiment still changes the key
    assert _rows_key(dataclasses.replace(cpu, seed=1), "resnet18") != _rows_key(cpu, "resnet18")


@needs_no_gpu
def test_bench_main_with_cuda_and_no_gpu_exits_2_before_any_work(tmp_path: Path, capsys) -> None:
    from coinfer.bench.split import main

    assert main(["--quick", "--device", "cuda", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "cuda" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_split_cli_device_flag(tmp_path: Path, capsys) -> None:
    from coinfer.cli import main
    from coinfer.server.split.cli import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    config = config_from_args(parser.parse_args(["split", "--quick", "--device", "auto", "--out", "b"]))
    assert (config.backbone_train.device, config.bottleneck_train.loop.device, config.finetune.loop.device) == ("auto",) * 3
    config = config_from_args(parser.parse_args(["split", "--quick", "--out", "b"]))
    assert (config.backbone_train.device, config.bottleneck_train.loop.device, config.finetune.loop.device) == ("cpu",) * 3
    with pytest.raises(SystemExit) as exc:
        main(["split", "--quick", "--device", "tpu", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "--device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["split", "--quick", "--device", "cuda", "--out", str(tmp_path / "y")]) == 2
        err = capsys.readouterr().err
        assert "cuda" in err and "Traceback" not in err and not (tmp_path / "y").exists()


@needs_gpu
def test_cuda_bottleneck_features_and_finetune_come_back_on_the_cpu(setup) -> None:
    splits, backbone, feats = setup
    on_gpu = compute_point_features(backbone, POINT, splits, max_train_images=256, device="cuda")
    for name in ("train", "train_teacher", "test", "val"):
        value = getattr(on_gpu, name)
        expected = getattr(feats, name).float()
        # Close, not equal: GPU convolutions round differently (TF32).
        assert value.device.type == "cpu" and value.shape == expected.shape, name
        assert (value.float() - expected).abs().max() <= 0.02 * expected.abs().max() + 1e-3, name
    last = backbone.num_points - 1
    tail = backbone.segment(POINT, last)
    for design in ("paper", "ours"):
        bcfg = sizing.for_reduction(feats.feature_shape, design, 8.0)
        ae, log = train_bottleneck(bcfg, on_gpu, tail, _train_cfg(device="cuda"))
        assert all(t.device.type == "cpu" for t in ae.state_dict().values()) and len(log.distill_loss) == 4
        assert all(t.device.type == "cpu" for t in backbone.state_dict().values()) and _shares_parameters(tail, backbone)
        evaluate_bottleneck(ae, tail, on_gpu.test, on_gpu.test_labels, 4)
        head, ft_tail = finetune_point(backbone, ae, POINT, splits, 4, with_loop(FinetuneConfig(steps=3), batch_size=16,
                                                                                  progress=False, device="cuda"))
        for module in (head, ft_tail, ae):
            assert all(t.device.type == "cpu" for t in module.state_dict().values())
        evaluate_bottleneck(ae, ft_tail, on_gpu.test, on_gpu.test_labels, 4)


def test_bench_workers_flag() -> None:
    from coinfer.core.errors import InvalidInput

    assert config_from_args(build_parser().parse_args(["--workers", "3"])).workers == 3
    assert config_from_args(build_parser().parse_args([])).workers == BenchConfig().workers
    with pytest.raises(InvalidInput, match="--workers"):
        config_from_args(build_parser().parse_args(["--workers", "0"]))
