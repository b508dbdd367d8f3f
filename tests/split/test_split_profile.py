"""`coinfer profile`: the device profile schema, real wire bytes, energy source, refused bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from coinfer.core.bundle import load_bundle
from coinfer.core.codec import encode, to_bytes
from coinfer.core.errors import IntegrityError
from coinfer.core.profile import load_profile
from coinfer.core.split_point import DeviceHalf, load_samples
from coinfer.edge.profiling import ProfileConfig, profile_bundle

from quantised import expected_logits, payload_slack_bytes, split_halves
from split_helpers import fake_powercap


def quick(**changes) -> ProfileConfig:
    values = dict(repeats=3, warmup=1, energy_window_s=0.02, progress=False)
    values.update(changes)
    return ProfileConfig(**values)


def test_profile_uses_the_shared_schema_and_real_payloads(split_run, tmp_path: Path) -> None:
    path, report = split_run
    profile = profile_bundle(path, quick(powercap_root=tmp_path / "no-rapl"))
    out = tmp_path / "profile.json"
    profile.save(out)
    again = load_profile(str(out))  # validated by the simulator's own loader
    assert again == profile
    assert profile.energy_source == "modelled" and profile.backbone == "resnet18"
    assert [p.index for p in profile.points] == list(range(6))
    bundle = load_bundle(path)
    images, _ = load_samples(bundle)
    assert profile.points[0].uplink_bits == 8 * len(to_bytes(encode(images[:1])))
    assert profile.points[0].feature_bits == 8 * 64
    assert profile.points[-1].uplink_bits == 0 and profile.points[-1].feature_bits == 0
    for cost in profile.points[1:-1]:
        device = DeviceHalf.from_bundle(bundle, cost.index)
        payloads = [device(image[None])[0] for image in images]
        sizes = [len(payload) for payload in payloads]
        # The profiler's payloads, unless a feature on a rounding boundary took the other code there.
        slack = payload_slack_bytes(expected_logits(split_halves(bundle, cost.index), images), payloads[0])
        if slack:
            assert abs(cost.uplink_bits / 8 - float(np.mean(sizes))) <= 0.5 + slack / len(sizes)
        else:
            assert cost.uplink_bits == 8 * round(float(np.mean(sizes)))
        assert cost.feature_bits == 32 * report.points[cost.index].feature_fp32_bytes // 4
        assert cost.head_macs == report.points[cost.index].head_macs
    for cost, detail in zip(profile.points, profile.extra["points"]):
        assert cost.head_latency_s > 0 and cost.head_energy_j > 0 and cost.head_power_w > 0
        assert detail["energy_source"] == "modelled"
    assert profile.extra["energy"]["power_model"]["name"] == "server-core"


def test_profile_measures_where_rapl_is_readable(split_run, tmp_path: Path) -> None:
    path, _ = split_run
    root = fake_powercap(tmp_path / "powercap", {"intel-rapl:0": 123})
    profile = profile_bundle(path, quick(powercap_root=root))
    assert profile.energy_source == "measured"
    assert profile.extra["energy"]["rapl_domains"] == ["intel-rapl:0"]
    assert all(d["energy_source"] == "measured" for d in profile.extra["points"])


def test_a_tampered_bundle_is_refused(split_run, tmp_path: Path, capsys) -> None:
    path, _ = split_run
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    target = copy / "point2.encoder.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        profile_bundle(copy, quick())
    from coinfer.cli import main

    out = tmp_path / "p.json"
    assert main(["profile", "--bundle", str(copy), "--out", str(out), "--no-progress"]) == 2
    assert "sha256" in capsys.readouterr().err
    assert not out.exists()


def test_profile_cli_writes_the_file(split_run, tmp_path: Path, capsys) -> None:
    from coinfer.cli import main

    path, _ = split_run
    model = tmp_path / "board.json"
    model.write_text(json.dumps({"name": "board", "static_power_w": 1.0, "active_power_per_core_w": 0.5}))
    out = tmp_path / "profile.json"
    code = main(["profile", "--bundle", str(path), "--out", str(out), "--repeats", "3", "--warmup", "1",
                 "--energy-window", "0.02", "--energy", "modelled", "--power-model", str(model), "--no-progress"])
    assert code == 0
    profile = load_profile(str(out))
    assert profile.energy_source == "modelled"
    assert profile.extra["energy"]["power_model"]["static_power_w"] == 1.0
    # With 1 W of static power, no point can average below 1 W.
    assert all(p.head_power_w >= 1.0 for p in profile.points)
    assert "profile written" in capsys.readouterr().out
