"""The scheduler hands every slot's decisions to its link shaper, and survives a shaper that fails."""

from __future__ import annotations

import logging
from typing import Sequence

import pytest

from coinfer.protos.v1 import LoadReport
from coinfer.server.link_shaper import LinkDecision
from coinfer.server.scheduler import Scheduler, SchedulerConfig


class RecordingShaper:
    """Keeps every slot's decisions."""

    def __init__(self) -> None:
        self.slots: list[list[LinkDecision]] = []

    def apply(self, decisions: Sequence[LinkDecision]) -> None:
        self.slots.append(list(decisions))


class BrokenShaper:
    def apply(self, decisions: Sequence[LinkDecision]) -> None:
        raise OSError("tc: no such device")


def _coordinator(make_coordinator, catalog, n: int):
    # Addresses as on the testbed's emulated links (one /24 per device).
    return make_coordinator(catalog, n, address=lambda i: f"10.77.{i + 1}.2:8101")


def test_every_slot_s_decisions_reach_the_shaper(split_catalog, make_coordinator) -> None:
    coordinator = _coordinator(make_coordinator, split_catalog, 3)
    shaper = RecordingShaper()
    scheduler = Scheduler(coordinator, SchedulerConfig(policy="random", scenario="mahppo-paper-resnet18", slot_s=0.1,
                                                       seed=3), shaper)
    busy = coordinator.devices()[1]
    coordinator.heartbeat(busy.device_id, LoadReport(0, 0, None, 2, busy.generation, (), in_offload=2))
    applied = [scheduler.step() for _ in range(3)]
    assert len(shaper.slots) == 3
    for decisions, slot in zip(applied, shaper.slots):
        records = coordinator.devices()
        assert [d.name for d in slot] == [r.info.name for r in records]
        assert [d.address for d in slot] == [r.info.address for r in records]
        for record, d in zip(records, slot):
            assert (d.sub_channel, d.power_w) == (decisions[record.device_id].sub_channel,
                                                  decisions[record.device_id].power_w)
        assert [d.uploading for d in slot] == [False, True, False], "only a device with offloads in flight interferes"
    # The random policy moves powers between slots; the shaper sees each slot's, not a stale copy.
    assert len({tuple(d.power_w for d in slot) for slot in shaper.slots}) == 3
    coordinator.stop()


def test_a_failing_shaper_is_logged_and_scheduling_goes_on(split_catalog, make_coordinator, caplog) -> None:
    coordinator = _coordinator(make_coordinator, split_catalog, 2)
    scheduler = Scheduler(coordinator, SchedulerConfig(policy="offload", scenario="mahppo-paper-resnet18", slot_s=0.1),
                          BrokenShaper())
    with caplog.at_level(logging.ERROR, logger="coinfer.server.scheduler"):
        decisions = scheduler.step()
    assert len(decisions) == 2 and scheduler.slots == 1
    for record in coordinator.devices():
        assert coordinator.assignment_for(record).power_w == pytest.approx(decisions[record.device_id].power_w)
    assert "link shaping failed" in caplog.text and "no such device" in caplog.text
    coordinator.stop()


def test_a_shaper_needs_a_scheduler(split_bundle) -> None:
    from coinfer.core.errors import InvalidInput
    from coinfer.serving.server import ServerOptions
    from coinfer.server.serve import start_coordinator

    with pytest.raises(InvalidInput, match="give a scheduler"):
        start_coordinator(split_bundle.path, ServerOptions(),
                          link_shaper=RecordingShaper())
