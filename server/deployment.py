"""A split bundle made runnable on the coordinator: the tail for offloads, head + tail locally.

A bundle of kind "split" holds a ``head`` part (device side, from the input to the split
point) and a ``tail`` part (server side, from the split point to the logits), optionally an
``encoder`` (device) and ``decoder`` (server) around the link, and in its metadata the split
point and the codec settings of the uplinked feature. The keys below are the contract between
the bundle writers (e.g. `coinfer.server.skeleton`) and the runtime.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from coinfer.core.bundle import Bundle, PartSpec, TensorSpec
from coinfer.core.codec import datatype_of, decode, from_bytes
from coinfer.core.errors import FailedPrecondition, InvalidInput, NotFound
from coinfer.protos.oip import TensorMeta

SPLIT_KIND = "split"
# Roles of the parts that run on the device, in execution order; the rest runs here.
DEVICE_ROLES = ("head", "encoder")
SERVER_ROLES = ("decoder", "tail")
DEFAULT_MAX_BATCH = 256


@dataclass(frozen=True)
class SplitSettings:
    """What a split bundle's metadata says about how it runs."""

    model_name: str
    """Name under which the model is served (OIP model_name)."""
    split_point: int
    split_point_name: str
    codec_bits: int
    """Quantisation bits of the uplinked feature (0 = send FP32)."""
    codec_compress: bool
    power_w: float
    """Default uplink transmit power given to devices."""
    num_sub_channels: int
    max_batch: int

    @classmethod
    def from_metadata(cls, bundle: Bundle) -> SplitSettings:
        meta: dict[str, Any] = bundle.metadata
        where = f"bundle {bundle.path}"
        try:
            settings = cls(
                model_name=str(meta.get("model_name") or bundle.name),
                split_point=int(meta["split_point"]),
                split_point_name=str(meta.get("split_point_name", "")),
                codec_bits=int(meta.get("codec_bits", 0)),
                codec_compress=bool(meta.get("codec_compress", False)),
                power_w=float(meta.get("power_w", 0.1)),
                num_sub_channels=int(meta.get("num_sub_channels", 2)),
                max_batch=int(meta.get("max_batch", DEFAULT_MAX_BATCH)),
            )
        except KeyError as exc:
            raise InvalidInput(f"{where}: metadata lacks {exc.args[0]!r}, which a split bundle needs") from exc
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{where}: malformed split metadata ({exc})") from exc
        if settings.num_sub_channels < 1 or settings.max_batch < 1:
            raise InvalidInput(f"{where}: num_sub_channels and max_batch must be at least 1")
        return settings


def tensor_meta(spec: TensorSpec) -> TensorMeta:
    return TensorMeta(spec.name, spec.datatype, tuple(spec.shape))


def images_to_float(images: np.ndarray):
    """uint8 images (N, C, H, W) as the float tensor in [0, 1] the models take."""
    from coinfer.core.data import to_float

    return to_float(images)


class SplitDeployment:
    """The loaded modules of a split bundle and the two ways the coordinator runs them."""

    def __init__(self, bundle: Bundle) -> None:
        if bundle.kind != SPLIT_KIND:
            raise InvalidInput(f"bundle {bundle.path} is of kind {bundle.kind!r}; `coinfer serve` needs a {SPLIT_KIND!r} bundle")
        self.bundle = bundle
        self.settings = SplitSettings.from_metadata(bundle)
        roles = {spec.role: spec for spec in bundle.manifest.parts}
        for role in ("head", "tail"):
            if role not in roles:
                raise InvalidInput(f"split bundle {bundle.path} has no part with role {role!r}")
        self.head_spec = roles["head"]
        self.tail_spec = roles["tail"]
        self.device_parts: tuple[PartSpec, ...] = tuple(roles[r] for r in DEVICE_ROLES if r in roles)
        self.server_parts: tuple[PartSpec, ...] = tuple(roles[r] for r in SERVER_ROLES if r in roles)
        self.inputs = tuple(tensor_meta(t) for t in roles["head"].inputs)
        self.outputs = tuple(tensor_meta(t) for t in roles["tail"].outputs)
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise InvalidInput(f"split bundle {bundle.path}: the head must have one input and the tail one output")
        # What arrives over the link: the first server-side part's input.
        link = self.server_parts[0].inputs
        if len(link) != 1:
            raise InvalidInput(f"split bundle {bundle.path}: part {self.server_parts[0].name!r} must declare one input")
        self.link_input = tensor_meta(link[0])
        self._device_modules = [bundle.load_module(p.name) for p in self.device_parts]
        self._server_modules = [bundle.load_module(p.name) for p in self.server_parts]
        self.offloads = 0
        self._count_lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    def _run(self, modules: list, x):
        import torch

        with torch.inference_mode():
            for module in modules:
                x = module(x)
        return x

    def run_local(self, images: np.ndarray) -> np.ndarray:
        """Logits of the whole split model run here (no link, no quantisation)."""
        x = self._run(self._device_modules, images_to_float(images))
        return self._run(self._server_modules, x).float().numpy()

    def run_tail(self, model_name: str, split_point: int, payload: bytes) -> tuple[np.ndarray, float]:
        """Logits of an encoded feature uploaded by a device, and the milliseconds spent here."""
        import torch

        started = time.perf_counter()
        if model_name != self.model_name:
            raise NotFound(f"the coordinator serves no model {model_name!r} (it serves {self.model_name!r})")
        if split_point != self.settings.split_point:
            raise FailedPrecondition(
                f"model {model_name!r} is split at point {self.settings.split_point} here, the device sent point "
                f"{split_point}: it runs a stale assignment"
            )
        feature = decode(from_bytes(payload))
        datatype = datatype_of(feature)
        if not self.link_input.accepts(datatype, feature.shape):
            raise InvalidInput(
                f"offloaded feature must be {self.link_input.datatype} with shape {list(self.link_input.shape)} "
                f"(-1 = any), got {datatype} with shape {list(feature.shape)}"
            )
        if feature.shape[0] > self.settings.max_batch:
            raise InvalidInput(f"offloaded batch of {feature.shape[0]} exceeds the maximum of {self.settings.max_batch}")
        logits = self._run(self._server_modules, torch.from_numpy(feature)).float().numpy()
        with self._count_lock:
            self.offloads += 1
        return logits, (time.perf_counter() - started) * 1e3
