"""What a device computes for a request: the split path and DeViT sub-models.

Split path, at the point the scheduler assigned (read once per request, so a new decision
applies from the next request): the core's device half of that point
(`coinfer.core.split_point.DeviceHalf`) runs the device parts on the image; at the local point
their output is the answer; otherwise it encodes the result (the raw image at point 0), one
message per image when the bundle says so, and it is offloaded to the coordinator's tail under
the request's deadline. If the coordinator cannot be reached, a device holding the whole
model answers alone and says so (``fallback``); for a moment after such a failure it does not
try the coordinator again, so a dead coordinator costs one failed call, not one per request.

Response parameters carry the timings (``head_ms``, ``encode_ms``, ``offload_ms``, ``tail_ms``,
``upload_ms``), the critical-path compute (``compute_ms``), what crossed the link
(``payload_bytes``, ``uplink_energy_j``) and the decision used (``split_point``,
``sub_channel``, ``power_w``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable

import numpy as np

from coinfer.core.errors import CoinferError, FailedPrecondition, InvalidInput, Unavailable
from coinfer.core.split_point import run_on_images
from coinfer.edge.coordinator_client import CoordinatorClient
from coinfer.edge.loaded import LoadedAssignment
from coinfer.edge.metrics import EdgeMetrics
from coinfer.edge.stats import EdgeStats
from coinfer.protos.oip import ParameterValue
from coinfer.serving.oip_service import InferCall

log = logging.getLogger(__name__)


class EdgeInference:
    """The device's compute paths, over whatever assignment is loaded when a request starts."""

    def __init__(
        self,
        client: CoordinatorClient,
        stats: EdgeStats,
        metrics: EdgeMetrics,
        device_id: Callable[[], str],
        rpc_timeout_s: float,
        fallback_hold_s: float = 1.0,
    ) -> None:
        self.client = client
        self.stats = stats
        self.metrics = metrics
        self._device_id = device_id
        self.rpc_timeout_s = rpc_timeout_s
        self.fallback_hold_s = fallback_hold_s
        self._down_until = 0.0
        self._down_reason = ""
        self._lock = threading.Lock()

    def split(self, loaded: LoadedAssignment, images: np.ndarray, call: InferCall) -> tuple[np.ndarray, dict[str, ParameterValue]]:
        """Logits (FP32) for uint8 images, and the response parameters."""
        a = loaded.assignment
        half = loaded.device_half()
        plan = half.plan
        params: dict[str, ParameterValue] = {
            "split_point": plan.index,
            "sub_channel": a.sub_channel,
            "power_w": a.power_w,
            "generation": a.generation,
        }
        if len(images) == 0:  # nothing to compute or send; the answer has no rows, as on the coordinator
            classes = int(a.model_outputs[0].shape[-1]) if a.model_outputs else 0
            params.update(compute_ms=0.0, payload_bytes=0, offloaded=False)
            return np.zeros((0, max(classes, 0)), np.float32), params
        with self.stats.request():
            started = time.perf_counter()
            with self.stats.computing():
                sent = half.run(images)
            head_ms = (time.perf_counter() - started) * 1e3
            if not plan.offload:  # the local point: the device parts are the whole model
                self.metrics.compute.labels(a.model_name, "local").observe(head_ms / 1e3)
                params.update(head_ms=head_ms, compute_ms=head_ms, payload_bytes=0, offloaded=False)
                return sent, params
            self.metrics.compute.labels(a.model_name, "head").observe(head_ms / 1e3)
            encoded = time.perf_counter()
            payloads = half.encode(sent)
            encode_ms = (time.perf_counter() - encoded) * 1e3
            payload_bytes = sum(len(p) for p in payloads)
            params.update(head_ms=head_ms, encode_ms=encode_ms, payload_bytes=payload_bytes)
            down = self._coordinator_down()
            if down and a.fallback_parts:
                return self._fallback(loaded, images, params, down, head_ms + encode_ms)
            sent = time.perf_counter()
            try:
                with self.stats.offloading():
                    logits, tail_ms = self.client.offload(
                        a.model_name,
                        plan.index,
                        payloads,
                        per_image=a.codec_per_image,
                        request_id=call.request_id or uuid.uuid4().hex,
                        device_id=self._device_id(),
                        timeout_s=min(self.rpc_timeout_s, call.remaining_s(self.rpc_timeout_s)),
                    )
            except Unavailable as exc:
                self._mark_down(str(exc))
                if not a.fallback_parts:
                    raise
                return self._fallback(loaded, images, params, str(exc), head_ms + encode_ms)
            except CoinferError as exc:
                # The client's request was fine; the coordinator refused what *we* sent.
                raise FailedPrecondition(f"the coordinator refused the offloaded feature: {exc}") from exc
            offload_s = time.perf_counter() - sent
            upload_s = max(offload_s - tail_ms / 1e3, 0.0)
            energy_j = self.stats.uplink(payload_bytes, upload_s, a.power_w)
            self.metrics.offload.labels(a.model_name).observe(offload_s)
            self.metrics.uplink_bytes.labels(a.model_name).inc(payload_bytes)
            self.metrics.uplink_energy.labels(a.model_name).inc(energy_j)
            params.update(
                offload_ms=offload_s * 1e3,
                tail_ms=tail_ms,
                upload_ms=upload_s * 1e3,
                uplink_energy_j=energy_j,
                compute_ms=head_ms + encode_ms + tail_ms,
                offloaded=True,
            )
            return logits.astype(np.float32, copy=False), params

    def _coordinator_down(self) -> str:
        with self._lock:
            return self._down_reason if time.monotonic() < self._down_until else ""

    def _mark_down(self, reason: str) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self.fallback_hold_s
            self._down_reason = reason

    def _fallback(
        self, loaded: LoadedAssignment, images: np.ndarray, params: dict[str, ParameterValue], reason: str, spent_ms: float
    ) -> tuple[np.ndarray, dict[str, ParameterValue]]:
        a = loaded.assignment
        started = time.perf_counter()
        with self.stats.computing():
            logits = run_on_images(loaded.fallback_modules(), images)
        local_ms = (time.perf_counter() - started) * 1e3
        self.metrics.fallbacks.labels(a.model_name).inc()
        self.metrics.compute.labels(a.model_name, "fallback").observe(local_ms / 1e3)
        log.warning("answered on the device alone: %s", reason)
        params.update(fallback=True, fallback_reason=reason, local_ms=local_ms, compute_ms=spent_ms + local_ms, offloaded=False)
        return logits, params

    def submodel(self, loaded: LoadedAssignment | None, model_name: str, bundle: str, part: str, images: np.ndarray) -> tuple[np.ndarray, float]:
        """A DeViT sub-model's CLS features for uint8 images, and the milliseconds it took."""
        found = loaded.submodel(model_name, bundle, part) if loaded is not None else None
        if found is None:
            self.metrics.submodel_calls.labels(model_name, "FAILED_PRECONDITION").inc()
            raise FailedPrecondition(f"this device does not run sub-model {bundle}/{part} of {model_name!r} (its assignment changed?)")
        _, module = found
        declared = loaded.assignment.part(bundle, part).spec.inputs
        if declared and tuple(declared[0].shape[1:]) != tuple(images.shape[1:]):
            raise InvalidInput(
                f"sub-model {part!r} takes images of shape {list(declared[0].shape[1:])}, got {list(images.shape[1:])}"
            )
        with self.stats.request():
            started = time.perf_counter()
            with self.stats.computing():
                feature = run_on_images([module], images)
            compute_ms = (time.perf_counter() - started) * 1e3
        self.metrics.submodel_calls.labels(model_name, "OK").inc()
        self.metrics.compute.labels(model_name, "submodel").observe(compute_ms / 1e3)
        return feature, compute_ms
