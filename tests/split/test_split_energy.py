"""Energy meters: RAPL counters (with wrap-around) where readable, the CPU power model elsewhere."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.edge.energy import (
    POWER_MODELS,
    CpuPowerModel,
    ModelledMeter,
    RaplMeter,
    counter_delta_uj,
    find_rapl_domains,
    load_power_model,
    make_meter,
)
from split_helpers import fake_powercap, set_counter


def test_rapl_sums_packages_skips_subdomains_and_handles_wrap(tmp_path: Path) -> None:
    root = fake_powercap(tmp_path, {"intel-rapl:0": 999_000, "intel-rapl:1": 10, "intel-rapl:0:0": 5})
    domains = find_rapl_domains(root)
    assert [d.name for d in domains] == ["intel-rapl:0", "intel-rapl:1"]
    meter = make_meter(powercap_root=root)
    assert isinstance(meter, RaplMeter)
    meter.start()
    set_counter(root, "intel-rapl:0", 1_000)  # wrapped past 1_000_000: 1_001 + 1_000 uJ
    set_counter(root, "intel-rapl:1", 510)  # +500 uJ
    set_counter(root, "intel-rapl:0:0", 900_000)  # a sub-domain: must not count
    reading = meter.stop()
    assert reading.energy_source == "measured"
    assert reading.energy_j == pytest.approx((1_001 + 1_000 + 500) * 1e-6)


def test_counter_delta() -> None:
    assert counter_delta_uj(10, 30, 100) == 20
    assert counter_delta_uj(90, 5, 100) == 16  # 90 -> 100 (10 uJ), wrap to 0 (1 uJ), 0 -> 5


def test_no_readable_counters_falls_back_to_the_model(tmp_path: Path) -> None:
    meter = make_meter(powercap_root=tmp_path / "missing")
    assert isinstance(meter, ModelledMeter) and meter.energy_source == "modelled"
    with pytest.raises(NotFound):
        make_meter(powercap_root=tmp_path / "missing", prefer="measured")
    # Counters that exist but cannot be parsed count as unreadable too.
    root = fake_powercap(tmp_path / "pc", {"intel-rapl:0": 1})
    set_counter(root, "intel-rapl:0", -1)
    (root / "intel-rapl:0" / "max_energy_range_uj").write_text("garbage")
    assert isinstance(make_meter(powercap_root=root), ModelledMeter)


def test_modelled_energy_follows_the_documented_formula() -> None:
    model = CpuPowerModel("test", static_power_w=2.0, active_power_per_core_w=10.0)
    meter = make_meter(model, prefer="modelled")
    meter.start()
    # Busy until the process has used 0.05 s of CPU (however long a loaded machine makes that take).
    busy_from, deadline = time.process_time(), time.monotonic() + 60
    while time.process_time() - busy_from < 0.05:
        assert time.monotonic() < deadline, "the process got no CPU time in 60 s"
        sum(range(1000))
    reading = meter.stop()
    assert reading.energy_source == "modelled"
    assert reading.cpu_s >= 0.05
    assert reading.energy_j == pytest.approx(2.0 * reading.wall_s + 10.0 * reading.cpu_s)
    assert reading.power_w == pytest.approx(reading.energy_j / reading.wall_s)


def test_power_models_load_by_name_or_file(tmp_path: Path) -> None:
    assert load_power_model("jetson-nano") is POWER_MODELS["jetson-nano"]
    path = tmp_path / "board.json"
    path.write_text(json.dumps({"name": "board", "static_power_w": 1.5, "active_power_per_core_w": 0.7}))
    model = load_power_model(str(path))
    assert model.energy_j(wall_s=2.0, cpu_s=1.0) == pytest.approx(3.7)
    path.write_text(json.dumps({"static_power_w": 1.5}))
    with pytest.raises(InvalidInput, match="active_power_per_core_w"):
        load_power_model(str(path))
    path.write_text(json.dumps({"static_power_w": -1, "active_power_per_core_w": 1}))
    with pytest.raises(InvalidInput, match="static_power_w"):
        load_power_model(str(path))
    with pytest.raises(NotFound, match="jetson-nano"):
        load_power_model("no-such-model")
