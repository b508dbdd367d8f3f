"""A split bundle served by the coordinator: what devices get for every point, and the tails run here.

The plan and both halves of every point come from the core (`coinfer.core.split_point`), for
either bundle format: a multi-point bundle (schema ``coinfer.split/1``) or the walking
skeleton's single-point bundle (kind ``"split"``). Here they meet the coordinator: the serving
settings (model name, default power and sub-channels, batch limit), the parts each device must
hold, and the offloads devices send, checked against the point they claim.

Points behave as in the simulator: at point 0 the device sends the raw uint8 image and this
side runs the whole model; at the last point the device runs everything and sends nothing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from coinfer.core.bundle import Bundle, PartSpec
from coinfer.core.errors import FailedPrecondition, InvalidInput, NotFound
from coinfer.core.model_io import DEFAULT_MAX_BATCH
from coinfer.core.split_point import SPLIT_KIND, SPLIT_SCHEMA, SplitModel, SplitPoint, is_split_bundle, load_split_plan

DEFAULT_POWER_W = 0.1
"""Uplink transmit power given to devices before the scheduler decides, unless the bundle says."""
DEFAULT_SUB_CHANNELS = 2
"""Sub-channels the scheduler shares out, unless the bundle says."""


@dataclass(frozen=True)
class ServingSettings:
    """What a split bundle's metadata says about how it is served (defaults where it says nothing)."""

    model_name: str
    """Name under which the model is served (OIP model_name)."""
    power_w: float
    """Default uplink transmit power given to devices."""
    num_sub_channels: int
    max_batch: int

    @classmethod
    def from_metadata(cls, bundle: Bundle) -> ServingSettings:
        meta: dict[str, Any] = bundle.metadata
        where = f"bundle {bundle.path}"
        try:
            settings = cls(
                model_name=str(meta.get("model_name") or bundle.name),
                power_w=float(meta.get("power_w", DEFAULT_POWER_W)),
                num_sub_channels=int(meta.get("num_sub_channels", DEFAULT_SUB_CHANNELS)),
                max_batch=int(meta.get("max_batch", DEFAULT_MAX_BATCH)),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{where}: malformed split metadata ({exc})") from exc
        if settings.num_sub_channels < 1 or settings.max_batch < 1:
            raise InvalidInput(f"{where}: num_sub_channels and max_batch must be at least 1")
        return settings


class SplitDeployment:
    """Every split point of a split bundle, with the modules this side runs loaded."""

    def __init__(self, bundle: Bundle) -> None:
        if not is_split_bundle(bundle):
            raise InvalidInput(
                f"bundle {bundle.path} is of kind {bundle.kind!r} with no split plan; a split model needs a "
                f"{SPLIT_KIND!r} bundle or metadata.split ({SPLIT_SCHEMA})"
            )
        self.bundle = bundle
        plan = load_split_plan(bundle)
        settings = ServingSettings.from_metadata(bundle)
        self.model_name = settings.model_name
        self.max_batch = settings.max_batch
        self.power_w = settings.power_w
        self.num_sub_channels = settings.num_sub_channels
        self.backbone = plan.backbone
        self.per_image = plan.per_image
        self.inputs = (plan.image,)
        self.outputs = (plan.logits,)
        self.model = SplitModel(bundle, plan, self.max_batch)
        self.points: dict[int, SplitPoint] = self.model.points
        self.fallback_parts = plan.whole_model
        # The simulator's table of point names; the skeleton's single point has none.
        self.point_names = tuple(p.name for p in sorted(plan.points, key=lambda q: q.index)) if plan.per_image else ()
        offloaded = [p.index for p in plan.points if p.offload and p.index > 0]
        self.default_point = 2 if 2 in offloaded else min(offloaded, default=max(self.points))
        self.offloads = 0
        self._count_lock = threading.Lock()

    # What devices get ------------------------------------------------------------------------

    @property
    def available_points(self) -> tuple[int, ...]:
        return tuple(sorted(self.points))

    def nearest_point(self, point: int) -> int:
        """``point`` when the bundle has it, else the closest point it has (ties: the lower one)."""
        return min(self.points, key=lambda p: (abs(p - point), p))

    def point_name(self, point: int) -> str:
        return self.points[point].plan.name

    def device_parts(self, with_fallback: bool = True) -> tuple[PartSpec, ...]:
        """Every part a device needs for any point (and to run alone), without repeats, in order."""
        names: list[str] = []
        for index in self.available_points:
            names += [n for n in self.points[index].plan.device_parts if n not in names]
        if with_fallback:
            names += [n for n in self.fallback_parts if n not in names]
        return tuple(self.bundle.part(n) for n in names)

    # Running -------------------------------------------------------------------------------

    def run_local(self, images: np.ndarray) -> np.ndarray:
        """Logits of the whole model run here (no link, no quantisation)."""
        return self.model.run_whole(images)

    def run_tail(self, model_name: str, split_point: int, payloads: Sequence[bytes]) -> tuple[np.ndarray, float]:
        """Logits of what a device uploaded at ``split_point``, and the milliseconds spent here."""
        started = time.perf_counter()
        if model_name != self.model_name:
            raise NotFound(f"the coordinator serves no split model {model_name!r} (it serves {self.model_name!r})")
        point = self.points.get(split_point)
        if point is None or point.server is None:
            raise FailedPrecondition(
                f"model {model_name!r} takes offloads at points {[i for i, p in self.points.items() if p.plan.offload]}, "
                f"the device sent point {split_point}: it runs a stale assignment"
            )
        logits = point.server(payloads)
        with self._count_lock:
            self.offloads += 1
        return logits, (time.perf_counter() - started) * 1e3

    def reference(self, images: np.ndarray, split_point: int) -> np.ndarray:
        """What the split model computes in-process at ``split_point``: device half, codec, server half.

        Images are encoded one by one when the bundle says so (multi-point bundles), else as one
        batch, exactly as a device sends them.
        """
        return self.points[self.nearest_point(split_point)].reference(images)
