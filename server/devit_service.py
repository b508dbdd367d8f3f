"""A DeViT bundle served by the coordinator: sub-models on the devices, the fusion head here.

One request fans the image batch out to the device holding each sub-model, in parallel, under
one deadline (the caller's, less a margin for the fusion, capped by the configured timeout).
Features that arrive in time are fused with the others marked missing (the DEKD fusion head
has a learned stand-in for each device and is trained with device dropout); the response says
``degraded`` and which devices contributed. Fewer than ``min_devices`` features is UNAVAILABLE,
naming what happened to each missing one. A device whose connection is refused is skipped for
a moment, so a dead device costs one failed call rather than a wait per request.

A request is two steps: `DeViTServing.fan_out` (the features that arrived, and why each other
one is missing: a `FanOut`) and `DeViTServing.fuse_and_respond` (the fused logits and the
response parameters).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import grpc
import numpy as np

from coinfer.core.bundle import Bundle, TensorSpec
from coinfer.core.codec import tensor_from_raw, tensor_to_raw
from coinfer.core.devit_bundle import read_devit_layout
from coinfer.core.errors import DeadlineExceeded, InvalidInput, Unavailable
from coinfer.core.model_io import DEFAULT_MAX_BATCH, IMAGE_INPUT, LOGITS_OUTPUT
from coinfer.protos import coinfer_v1_pb2 as v1
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.serving.oip_service import InferCall, InferResult
from coinfer.protos.v1 import ModelInfo

log = logging.getLogger(__name__)

PLATFORM = "coinfer_devit"


@dataclass(frozen=True)
class Holder:
    """The device that runs one sub-model now."""

    device_id: str
    device_name: str
    address: str
    skip_reason: str = ""
    """Why the fan-out should not call the device now ("" = call it)."""


class FanOutRouter(Protocol):
    """What the fan-out needs from the coordinator: who holds what, channels, and feedback."""

    def holders(self, model_name: str) -> dict[int, Holder]:
        """Sub-model index -> the live device that has it loaded (indices without one are absent);
        a device the fan-out should skip for now carries a ``skip_reason``."""
        ...

    def stub(self, address: str) -> v1_grpc.EdgeStub: ...

    def report(self, holder: Holder, model_name: str, ok: bool, unreachable: bool, seconds: float) -> None:
        """Outcome of one sub-model call (for counters, metrics and skipping dead devices)."""
        ...


@dataclass(frozen=True)
class DeViTServeConfig:
    """How the coordinator serves DeViT models."""

    timeout_s: float = 2.0
    """Longest a fan-out waits for sub-model features (also when the caller gives a later deadline)."""
    min_devices: int = 0
    """Fewest features to answer with; 0 = half of the sub-models, rounded up."""
    margin_s: float = 0.005
    """Time kept back from the caller's deadline for the fusion and the reply."""
    fanout_threads: int = 64
    """Most sub-model calls in flight at once over all requests (threads kept for them)."""


@dataclass(frozen=True)
class Arrived:
    """A sub-model's features, back from its device in time."""

    feature: np.ndarray
    """FP32 (B, width)."""
    device_name: str
    compute_ms: float
    """What the device says it spent computing them."""


@dataclass(frozen=True)
class FanOut:
    """What one fan-out brought back: the features that arrived and why each other one is missing."""

    arrived: dict[int, Arrived]
    """Sub-model index -> its features."""
    missing: dict[int, str]
    """Sub-model index -> why it has none (no holder, skipped, deadline, the device's error)."""
    elapsed_ms: float
    """From the start of the fan-out to the last reply."""


def _why_not_call(holder: Holder | None, deadline: float) -> str:
    """Why a sub-model's device is not called ("" = call it)."""
    if holder is None:
        return "no live device has it loaded"
    if holder.skip_reason:
        return f"{holder.device_name}: {holder.skip_reason}"
    if deadline <= time.monotonic():
        return "no time left before the deadline"
    return ""


def _reasons(missing: dict[int, str]) -> str:
    return "; ".join(f"sub-model {i}: {why}" for i, why in sorted(missing.items()))


def _run_submodel(stub: v1_grpc.EdgeStub, request: v1.RunSubModelRequest, deadline: float) -> v1.RunSubModelResponse | None:
    """The device's reply, or None when the call waited for a pool thread until the deadline."""
    left = deadline - time.monotonic()  # taken when the call starts: time queued counts against it
    if left <= 0:
        return None
    return stub.RunSubModel(request, timeout=left)


class DeViTServing:
    """The ServedModel of one DeViT bundle on the coordinator's front door."""

    version = "1"
    platform = PLATFORM

    def __init__(self, bundle: Bundle, config: DeViTServeConfig | None = None, router: FanOutRouter | None = None) -> None:
        layout = read_devit_layout(bundle)
        self.bundle = bundle
        self.config = config or DeViTServeConfig()
        self.router = router
        self.name = layout.model_name
        self.submodel_parts = layout.submodel_parts
        self.fusion_part = layout.fusion_part
        self.fusion = bundle.load_module(layout.fusion_part)
        self.feature_dims = layout.feature_dims
        self.inputs = (TensorSpec(IMAGE_INPUT, "UINT8", (-1, *layout.image_shape)),)
        self.outputs = (TensorSpec(LOGITS_OUTPUT, "FP32", (-1, layout.num_classes)),)
        self.max_batch = DEFAULT_MAX_BATCH
        n = len(self.submodel_parts)
        self.min_devices = self.config.min_devices or math.ceil(n / 2)
        if not 1 <= self.min_devices <= n:
            raise InvalidInput(f"min_devices must be between 1 and {n} for {self.name!r}, got {self.config.min_devices}")
        self._local: list | None = None
        self._local_lock = threading.Lock()
        # Blocking calls on kept threads: grpc's .future() starts a channel-polling thread whenever
        # none is running, which cost the coordinator more CPU per request than the calls themselves.
        self._fanout = ThreadPoolExecutor(self.config.fanout_threads, thread_name_prefix=f"fanout-{self.name}")

    def close(self) -> None:
        """Stop the fan-out threads; the model cannot call sub-models after this."""
        self._fanout.shutdown(wait=False, cancel_futures=True)

    @property
    def num_submodels(self) -> int:
        return len(self.submodel_parts)

    def model_info(self) -> ModelInfo:
        """What an edge daemon needs to forward this model (its OIP metadata)."""
        return ModelInfo(self.name, self.platform, self.inputs, self.outputs)

    def _callable_holders(self) -> int:
        if self.router is None:
            return 0
        return sum(1 for h in self.router.holders(self.name).values() if not h.skip_reason)

    def is_ready(self) -> bool:
        """Enough devices hold their sub-models loaded to answer."""
        return self._callable_holders() >= self.min_devices

    def why_not_ready(self) -> str:
        held = self._callable_holders()
        return f"{held} of {self.num_submodels} sub-models are loaded on live devices, {self.min_devices} needed"

    # Serving -------------------------------------------------------------------------------

    def infer(self, inputs: dict[str, np.ndarray], call: InferCall) -> InferResult:
        """Fan the images out to the sub-models' devices, then fuse what arrived and answer."""
        return self.fuse_and_respond(self.fan_out(inputs[IMAGE_INPUT], call))

    def fan_out(self, images: np.ndarray, call: InferCall) -> FanOut:
        """Ask every sub-model's device for its features, in parallel under one deadline."""
        router = self.router
        if router is None:
            raise Unavailable(f"model {self.name!r} has no device router")
        started = time.perf_counter()
        deadline = self._deadline(call)
        holders = router.holders(self.name)
        datatype, shape, raw = tensor_to_raw(images)
        missing: dict[int, str] = {}
        calls: dict[int, tuple[Holder, Future, float]] = {}
        for index, part in enumerate(self.submodel_parts):
            holder = holders.get(index)
            reason = _why_not_call(holder, deadline)
            if holder is None or reason:
                missing[index] = reason
                continue
            request = v1.RunSubModelRequest(
                model_name=self.name,
                bundle=self.bundle.name,
                part=part,
                images=v1.RawTensor(datatype=datatype, shape=shape, data=raw),
                request_id=call.request_id,
            )
            future = self._fanout.submit(_run_submodel, router.stub(holder.address), request, deadline)
            calls[index] = (holder, future, time.perf_counter())
        arrived: dict[int, Arrived] = {}
        for index, (holder, future, sent) in calls.items():
            outcome = self._collect(router, index, holder, future, sent, batch=len(images))
            if isinstance(outcome, Arrived):
                arrived[index] = outcome
            else:
                missing[index] = outcome
        return FanOut(arrived, missing, (time.perf_counter() - started) * 1e3)

    def _deadline(self, call: InferCall) -> float:
        """When the fan-out must be over: the caller's deadline less the margin, capped by the timeout."""
        now = time.monotonic()
        deadline = min(now + call.remaining_s(self.config.timeout_s) - self.config.margin_s, now + self.config.timeout_s)
        if deadline <= now:
            # Fanning out would only produce an answer nobody waits for.
            raise DeadlineExceeded(
                f"model {self.name!r}: the request's deadline leaves {call.remaining_s(0.0) * 1e3:.1f} ms, less than the "
                f"{self.config.margin_s * 1e3:.1f} ms kept for fusion and reply; allow more time (deadline_ms or the call's deadline)"
            )
        return deadline

    def _collect(self, router: FanOutRouter, index: int, holder: Holder, future: Future, sent: float, batch: int) -> Arrived | str:
        """One call's feature, or why there is none; the outcome is reported to the router."""
        try:
            reply = future.result()
            if reply is None:
                return f"{holder.device_name}: not called, the deadline passed while the call waited for a fan-out thread"
            feature = tensor_from_raw(reply.feature.datatype, tuple(reply.feature.shape), reply.feature.data)
            width = self.feature_dims[index]
            if feature.dtype != np.float32 or feature.shape != (batch, width):
                raise InvalidInput(f"sent a {feature.dtype} feature of shape {list(feature.shape)}, expected FP32 ({batch}, {width})")
        except grpc.RpcError as exc:
            code = exc.code()
            router.report(holder, self.name, False, code == grpc.StatusCode.UNAVAILABLE, time.perf_counter() - sent)
            return f"{holder.device_name}: {code.name}: {exc.details()}"
        except InvalidInput as exc:
            router.report(holder, self.name, False, False, time.perf_counter() - sent)
            return f"{holder.device_name}: {exc}"
        router.report(holder, self.name, True, False, time.perf_counter() - sent)
        return Arrived(feature, holder.device_name, float(reply.compute_ms))

    def fuse_and_respond(self, fan_out: FanOut) -> InferResult:
        """The fused logits and the response parameters; UNAVAILABLE when too few features arrived."""
        import torch

        arrived, missing = fan_out.arrived, fan_out.missing
        if len(arrived) < self.min_devices:
            raise Unavailable(
                f"model {self.name!r}: {len(arrived)} of {self.num_submodels} sub-model features arrived within "
                f"{fan_out.elapsed_ms:.0f} ms, {self.min_devices} needed ({_reasons(missing)})"
            )
        fused = time.perf_counter()
        with torch.inference_mode():
            features = {i: torch.from_numpy(arrived[i].feature) for i in sorted(arrived)}
            logits = self.fusion.forward_available(features).float().numpy()
        fusion_ms = (time.perf_counter() - fused) * 1e3
        compute_ms = [a.compute_ms for a in arrived.values()]
        parameters: dict[str, bool | int | float | str] = {
            "degraded": len(arrived) < self.num_submodels,
            "devices": ",".join(arrived[i].device_name for i in sorted(arrived)),
            "submodels": ",".join(str(i) for i in sorted(arrived)),
            "fanout_ms": fan_out.elapsed_ms,
            "fusion_ms": fusion_ms,
            "submodel_compute_ms": max(compute_ms),
            "submodel_compute_total_ms": sum(compute_ms),
            "compute_ms": max(compute_ms) + fusion_ms,
        }
        if missing:
            parameters["missing"] = ",".join(str(i) for i in sorted(missing))
            parameters["missing_reason"] = _reasons(missing)
        return InferResult({LOGITS_OUTPUT: logits}, parameters)

    # In-process reference ------------------------------------------------------------------

    def run_local(self, images: np.ndarray, present: tuple[int, ...] | None = None) -> np.ndarray:
        """The ensemble run whole in this process (sub-models loaded on first use).

        ``present`` lists the sub-models to use (default: all); the others are marked missing.
        """
        import torch

        from coinfer.core.data import to_float

        with self._local_lock:
            if self._local is None:
                self._local = [self.bundle.load_module(p) for p in self.submodel_parts]
        x = to_float(images)
        keep = range(self.num_submodels) if present is None else present
        with torch.inference_mode():
            return self.fusion.forward_available({i: self._local[i](x) for i in keep}).float().numpy()
