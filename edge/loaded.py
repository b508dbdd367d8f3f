"""An assignment made runnable on the device: every part downloaded, verified and loaded.

Modules are kept by (bundle, part, sha256), so a new assignment generation that only changes the
scheduler's decision (split point, sub-channel, power) reuses every loaded module and takes
effect at once, and one that adds a part loads only that part. The swap is one reference
assignment: a request runs entirely on the assignment it started with.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterable

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.core.split_point import DeviceHalf
from coinfer.edge.part_cache import FetchFn, PartCache
from coinfer.protos.v1 import Assignment, PartRef, SubModelRef

log = logging.getLogger(__name__)

ModuleKey = tuple[str, str, str]
"""(bundle, part, sha256)."""


class LoadedAssignment:
    """One assignment with its modules, ready to run."""

    def __init__(self, assignment: Assignment, modules: dict[tuple[str, str], object]) -> None:
        self.assignment = assignment
        self._modules = modules
        self._halves: dict[int, DeviceHalf] = {}

    def module(self, bundle: str, part: str):
        try:
            return self._modules[(bundle, part)]
        except KeyError:
            raise NotFound(f"part {bundle}/{part} is not loaded on this device") from None

    def device_half(self, index: int | None = None) -> DeviceHalf:
        """The device half of split point ``index`` (default: the assigned one), built once per assignment."""
        plan = self.assignment.point_plan(index)
        half = self._halves.get(plan.index)
        if half is None:
            modules = [self.module(self.assignment.bundle, name) for name in plan.device_parts]
            half = self._halves[plan.index] = DeviceHalf(plan, modules, self.assignment.codec_per_image)
        return half

    def fallback_modules(self) -> list:
        """The whole split model (empty when the coordinator gave no fallback)."""
        return [self.module(self.assignment.bundle, name) for name in self.assignment.fallback_parts]

    def submodel(self, model_name: str, bundle: str, part: str) -> tuple[SubModelRef, object] | None:
        for ref in self.assignment.submodels:
            if ref.model_name == model_name and ref.bundle == bundle and ref.part == part:
                return ref, self.module(bundle, part)
        return None

    @property
    def parts_held(self) -> tuple[str, ...]:
        return tuple(ref.key for ref in self.assignment.parts)


class ModuleStore:
    """Downloads, verifies and loads parts; keeps modules by hash across assignments."""

    def __init__(self, cache: PartCache) -> None:
        self.cache = cache
        self._modules: dict[ModuleKey, object] = {}
        self._lock = threading.Lock()

    def load(self, assignment: Assignment, fetch: FetchFn) -> LoadedAssignment:
        """Every part of ``assignment`` downloaded (when missing), verified and loaded."""
        _check_references(assignment)
        modules: dict[tuple[str, str], object] = {}
        for bundle, refs in _by_bundle(assignment.parts).items():
            for ref in refs:
                self.cache.ensure(bundle, ref.spec, fetch)
            opened = None
            for ref in refs:
                key = (bundle, ref.spec.name, ref.spec.sha256)
                with self._lock:
                    module = self._modules.get(key)
                if module is None:
                    if opened is None:
                        opened = self.cache.open_bundle(bundle, [r.spec for r in refs])
                    module = opened.load_module(ref.spec.name)
                    with self._lock:
                        self._modules[key] = module
                modules[(bundle, ref.spec.name)] = module
        wanted = {(r.bundle, r.spec.name, r.spec.sha256) for r in assignment.parts}
        with self._lock:
            for key in [k for k in self._modules if k not in wanted]:
                del self._modules[key]  # parts the device no longer runs
        return LoadedAssignment(assignment, modules)


def _by_bundle(parts: Iterable[PartRef]) -> dict[str, list[PartRef]]:
    out: dict[str, list[PartRef]] = {}
    for ref in parts:
        out.setdefault(ref.bundle, []).append(ref)
    return out


def _check_references(a: Assignment) -> None:
    """Every part a plan names must be in the assignment's parts: refuse the assignment otherwise."""
    held = {(r.bundle, r.spec.name) for r in a.parts}
    named: list[tuple[str, str]] = [(a.bundle, n) for p in a.split_points for n in p.device_parts]
    named += [(a.bundle, n) for n in a.fallback_parts]
    named += [(s.bundle, s.part) for s in a.submodels]
    missing = sorted({f"{b}/{n}" for b, n in named if (b, n) not in held})
    if missing:
        raise InvalidInput(f"assignment {a.generation} names parts it does not ship: {', '.join(missing)}")
    if a.model_name and not any(p.index == a.split_point for p in a.split_points):
        raise InvalidInput(f"assignment {a.generation} puts the device at split point {a.split_point}, which it does not describe")

