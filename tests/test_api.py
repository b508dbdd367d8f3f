"""The Python API: light to import, documented, and every job doing its work at a tiny budget."""

from __future__ import annotations

import inspect
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import coinfer
from coinfer.core.errors import CoinferError, InvalidInput

ROOT = Path(__file__).resolve().parents[1]


def test_import_coinfer_and_the_command_line_load_neither_torch_nor_grpc():
    code = (
        "import sys, coinfer, coinfer.cli; coinfer.cli.build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'grpc', 'stable_baselines3'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_name_is_typed_and_documented():
    assert set(coinfer.__all__) >= {"train_teacher", "import_teacher", "decompose", "split", "profile", "serve", "start_edge", "InferenceClient"}
    for name in coinfer.__all__:
        value = getattr(coinfer, name)
        if name == "__version__":
            continue
        assert inspect.getdoc(value), name
        if inspect.isfunction(value):
            signature = inspect.signature(value)
            assert signature.return_annotation is not inspect.Signature.empty, name
            untyped = [p for p in signature.parameters.values() if p.annotation is inspect.Parameter.empty]
            assert not untyped, f"{name}: {untyped}"
    assert set(coinfer.__all__) <= set(dir(coinfer))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        coinfer.nothing  # noqa: B018
    from coinfer import edge  # the package, not the edge starter

    assert edge.__name__ == "coinfer.edge"


def test_the_package_ships_its_type_hints():
    import importlib.resources
    import tomllib

    assert importlib.resources.files("coinfer").joinpath("py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["coinfer"]


def _python_threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def _port_is_free(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


def test_serve_and_start_edge_answer_in_process_and_stop_leaves_nothing_running(tmp_path):
    from coinfer.bench.fixtures import SplitBundleConfig, build_split_bundle

    bundle = build_split_bundle(tmp_path / "split", SplitBundleConfig(model_name="digits-split"))
    images = np.random.default_rng(0).integers(0, 256, size=(3, 1, 8, 8), dtype=np.uint8)
    before = _python_threads()
    coordinator = coinfer.serve(bundle.path, heartbeat_s=0.5)
    edge = coinfer.start_edge(coordinator.address, "api-edge", cache_dir=tmp_path / "cache")
    try:
        with coinfer.InferenceClient(edge.address) as client:
            client.wait_until_ready("digits-split")
            logits = client.infer("digits-split", {"image": images}).outputs["logits"]
        assert logits.shape == (3, 10) and np.isfinite(logits).all()
    finally:
        edge.stop(0.5)
        coordinator.stop(0.5)
    assert _port_is_free(edge.address) and _port_is_free(coordinator.address)
    with coinfer.InferenceClient(coordinator.address, timeout_s=2.0) as client, pytest.raises(CoinferError):
        client.server_live()
    deadline = time.monotonic() + 30  # worker threads end once their last call returns
    while _python_threads() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [t.name for t in _python_threads() - before]


def test_servers_refuse_bad_options_before_binding(tmp_path):
    with pytest.raises(InvalidInput, match="--heartbeat-s must be positive"):
        coinfer.serve(tmp_path, heartbeat_s=0)
    with pytest.raises(InvalidInput, match="need a --policy"):
        coinfer.serve(tmp_path, scenario="dense")
    with pytest.raises(InvalidInput, match="--rpc-timeout-s"):
        coinfer.start_edge("127.0.0.1:1", "x", rpc_timeout_s=0)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    from coinfer.core.measure import torch_threads

    out = tmp_path_factory.mktemp("api") / "teacher"
    with torch_threads(1):
        model, meta = coinfer.train_teacher(out, arch="vit-nano", epochs=6, lr=3e-3, batch_size=64, progress=False)
    assert meta["arch"] == "vit-nano" and meta["dataset"] == "digits" and 0.0 <= meta["test_accuracy"] <= 1.0
    assert model.config.embed_dim == 64 and not model.training
    return out


@pytest.mark.slow
def test_teacher_jobs_and_decompose_at_tiny_budgets(teacher_dir, tmp_path):
    from safetensors.torch import save_file

    from coinfer.core.measure import torch_threads
    from coinfer.core.devit_bundle import load_devit
    from coinfer.server.dekd.teacher import load_teacher

    trained, meta = load_teacher(teacher_dir)
    assert meta["test_accuracy"] > 0.15 and meta["recipe"]["why"] == "6 epochs as given"  # ten classes: above chance through mixup and cutmix
    weights = tmp_path / "vit.safetensors"  # our ViT's parameter names are timm's
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(weights))
    imported, imported_meta = coinfer.import_teacher(weights, tmp_path / "imported", num_heads=4, dataset="digits")
    assert imported_meta["test_accuracy"] == pytest.approx(meta["test_accuracy"])
    with pytest.raises(InvalidInput, match="already exists"):
        coinfer.import_teacher(weights, tmp_path / "imported")
    with torch_threads(1):
        report = coinfer.decompose(
            tmp_path / "devit", teacher=teacher_dir, devices=2, device_speeds=[1, 0.5], budget="quick",
            distill_epochs=1, ensemble_epochs=1, baseline=False, progress=False,
        )
    deployment = load_devit(tmp_path / "devit")
    assert len(deployment.submodels) == 2 and report.single_student is None
    assert json.loads((tmp_path / "devit" / "report.json").read_text())["partition"] == report.partition
    assert [d.speed for d in report.ensemble.devices] == [1.0, 0.5]


@pytest.mark.slow
def test_split_and_profile_at_tiny_budgets(tmp_path):
    from coinfer.core.bundle import load_bundle

    report = coinfer.split(
        tmp_path / "split", "resnet18", quick=True, points=[2], bottleneck="paper", epochs=1, recon_steps=2,
        distill_steps=2, max_train_images=64, test_images=32, threads=1, progress=False,
    )
    assert [p.index for p in report.points if p.index not in (0, 5)] == [2]
    assert load_bundle(tmp_path / "split").kind == "split-points"
    profile = coinfer.profile(tmp_path / "split", tmp_path / "profile.json", repeats=2, warmup=1, energy="modelled", progress=False)
    assert profile.energy_source == "modelled" and [p.index for p in profile.points] == [0, 2, 5]
    assert json.loads((tmp_path / "profile.json").read_text()) == json.loads(json.dumps(profile.to_dict()))


def _readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section has one example"
    return blocks[0]


@pytest.mark.slow
def test_the_readme_example_runs(monkeypatch, tmp_path, capsys):
    """The example as written, with the training budgets cut to one epoch (the calls stay the same)."""
    from coinfer.core.measure import torch_threads

    tiny = {
        "train_teacher": dict(epochs=1, batch_size=64, progress=False),
        "decompose": dict(distill_epochs=1, ensemble_epochs=1, baseline=False, progress=False),
    }
    for name, budget in tiny.items():
        real = getattr(coinfer, name)
        monkeypatch.setattr(coinfer, name, lambda *args, _real=real, _budget=budget, **kwargs: _real(*args, **{**kwargs, **_budget}))
    monkeypatch.chdir(tmp_path)
    with torch_threads(1):
        exec(compile(_readme_example(), "README.md", "exec"), {"__name__": "readme_example"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"teacher 0\.\d{3}, 4 devices 0\.\d{3}, \d+\.\d+x faster", lines[0]), lines
    assert re.fullmatch(r"\[( ?\d)+\]", lines[1]) and len(lines[1].strip("[]").split()) == 8, lines
    assert lines[2].startswith("(64, ") and float(lines[2].split(")")[1]) < 0, lines
    assert (tmp_path / "runs" / "api" / "devit" / "manifest.json").is_file()
