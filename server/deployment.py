"""A split bundle made runnable: for every split point, what the device runs and what runs here.

Two bundle formats, one code path. A multi-point bundle (schema ``coinfer.split/1``, see
`coinfer.core.split_runtime`) lists every point's parts; the walking skeleton's single-point
bundle (kind ``"split"``: ``head``/``tail`` parts, optional ``encoder``/``decoder``, and the
point and codec settings in its metadata) is read as a multi-point bundle with one
intermediate point. Either way the result is a table of `ServerPoint`s: the device half
(a `PointPlan` sent to devices) and the server half (parts run here on what arrives).

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
from coinfer.core.codec import datatype_of, decode, encode, from_bytes, to_bytes
from coinfer.core.errors import FailedPrecondition, InvalidInput, NotFound
from coinfer.protos.oip import TensorMeta
from coinfer.serving.parts import load_part_module
from coinfer.protos.v1 import PointPlan

SPLIT_KIND = "split"
"""Kind of the walking skeleton's single-point bundles."""
DEVICE_ROLES = ("head", "encoder")
SERVER_ROLES = ("decoder", "tail")
DEFAULT_MAX_BATCH = 256
IMAGE_INPUT = "image"
LOGITS_OUTPUT = "logits"


@dataclass(frozen=True)
class SplitSettings:
    """What a single-point bundle's metadata says about how it runs."""

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


@dataclass(frozen=True)
class ServerPoint:
    """Both halves of one split point."""

    plan: PointPlan
    """The device half, as devices receive it."""
    server_parts: tuple[str, ...]
    """Parts run here, in order, on what the device sent (empty at the local point)."""
    raw_input: bool
    """What arrives is the uint8 image (point 0), scaled to [0, 1] before the first part."""
    link: TensorMeta | None
    """Declared type and shape of what arrives, when the bundle says (None = not checked here)."""


def tensor_meta(spec) -> TensorMeta:
    return TensorMeta(spec.name, spec.datatype, tuple(spec.shape))


def is_split_bundle(bundle: Bundle) -> bool:
    """Whether the runtime can serve ``bundle`` as a split model (either format)."""
    return bundle.kind == SPLIT_KIND or isinstance(bundle.metadata.get("split"), dict)


def images_to_float(images: np.ndarray):
    """uint8 images (N, C, H, W) as the float tensor in [0, 1] the models take."""
    from coinfer.core.data import to_float

    return to_float(images)


class SplitDeployment:
    """Every split point of a split bundle, with the modules this side runs loaded."""

    def __init__(self, bundle: Bundle) -> None:
        if not is_split_bundle(bundle):
            raise InvalidInput(
                f"bundle {bundle.path} is of kind {bundle.kind!r} with no split plan; a split model needs a "
                f"{SPLIT_KIND!r} bundle or metadata.split (coinfer.split/1)"
            )
        self.bundle = bundle
        self.max_batch = DEFAULT_MAX_BATCH
        self.power_w = 0.1
        self.num_sub_channels = 2
        if isinstance(bundle.metadata.get("split"), dict):
            self._read_multi_point()
        else:
            self._read_single_point()
        names = {name for p in self.points.values() for name in p.server_parts}
        self._modules = {name: load_part_module(bundle, name) for name in sorted(names)}
        self._local = [self._load(name) for name in self.fallback_parts]
        self.offloads = 0
        self._count_lock = threading.Lock()

    # Reading the two formats ---------------------------------------------------------------

    def _read_multi_point(self) -> None:
        from coinfer.core.split_runtime import load_split_plan

        plan = load_split_plan(self.bundle)
        meta = self.bundle.metadata
        self.model_name = str(meta.get("model_name") or self.bundle.name)
        self.backbone = plan.backbone
        self.per_image = True
        channels, height, width = plan.input_shape
        self.inputs = (TensorMeta(IMAGE_INPUT, "UINT8", (-1, channels, height, width)),)
        self.outputs = (TensorMeta(LOGITS_OUTPUT, "FP32", (-1, plan.num_classes)),)
        last = max(p.index for p in plan.points)
        self.points: dict[int, ServerPoint] = {}
        for p in plan.points:
            if p.index == 0:
                device: tuple[str, ...] = ()
            elif p.tail is None:
                device = tuple(x for x in (p.head,) if x)
            else:
                device = tuple(x for x in (p.head, p.encoder) if x)
            server = tuple(x for x in (p.decoder, p.tail) if x)
            offload = p.tail is not None
            first = self.bundle.part(server[0]) if server and p.index != 0 else None
            link = tensor_meta(first.inputs[0]) if first is not None and len(first.inputs) == 1 else None
            self.points[p.index] = ServerPoint(
                PointPlan(p.index, p.name, device, offload, p.bits if offload else 0, p.compress if offload else False),
                server if offload else (),
                raw_input=p.index == 0,
                link=link,
            )
        local = self.points.get(last)
        if local is None or local.plan.offload or not local.plan.device_parts:
            raise InvalidInput(f"{self.bundle.path}: the last split point must run the whole model on the device")
        self.fallback_parts = local.plan.device_parts
        self.point_names = tuple(p.name for p in sorted(plan.points, key=lambda q: q.index))
        self.default_point = 2 if 2 in self.points and self.points[2].plan.offload else min(
            (i for i, p in self.points.items() if p.plan.offload and i > 0), default=last
        )

    def _read_single_point(self) -> None:
        bundle = self.bundle
        settings = SplitSettings.from_metadata(bundle)
        self.settings = settings
        self.model_name = settings.model_name
        self.max_batch = settings.max_batch
        self.power_w = settings.power_w
        self.num_sub_channels = settings.num_sub_channels
        self.per_image = False
        roles = {spec.role: spec for spec in bundle.manifest.parts}
        for role in ("head", "tail"):
            if role not in roles:
                raise InvalidInput(f"split bundle {bundle.path} has no part with role {role!r}")
        self.backbone = str(roles["head"].config.get("arch", ""))
        device = tuple(roles[r].name for r in DEVICE_ROLES if r in roles)
        server = tuple(roles[r].name for r in SERVER_ROLES if r in roles)
        self.inputs = tuple(tensor_meta(t) for t in roles["head"].inputs)
        self.outputs = tuple(tensor_meta(t) for t in roles["tail"].outputs)
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise InvalidInput(f"split bundle {bundle.path}: the head must have one input and the tail one output")
        link = bundle.part(server[0]).inputs
        if len(link) != 1:
            raise InvalidInput(f"split bundle {bundle.path}: part {server[0]!r} must declare one input")
        point = settings.split_point
        plan = PointPlan(point, settings.split_point_name, device, True, settings.codec_bits, settings.codec_compress)
        self.points = {point: ServerPoint(plan, server, raw_input=False, link=tensor_meta(link[0]))}
        self.fallback_parts = device + server
        self.point_names = ()
        self.default_point = point

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

    def _load(self, name: str):
        module = self._modules.get(name)
        if module is None:
            module = self._modules[name] = load_part_module(self.bundle, name)
        return module

    @staticmethod
    def _run(modules: Sequence, x):
        import torch

        with torch.inference_mode():
            for module in modules:
                x = module(x)
        return x

    def run_local(self, images: np.ndarray) -> np.ndarray:
        """Logits of the whole model run here (no link, no quantisation)."""
        return self._run(self._local, images_to_float(images)).float().numpy()

    def run_tail(self, model_name: str, split_point: int, payloads: Sequence[bytes]) -> tuple[np.ndarray, float]:
        """Logits of what a device uploaded at ``split_point``, and the milliseconds spent here."""
        started = time.perf_counter()
        if model_name != self.model_name:
            raise NotFound(f"the coordinator serves no split model {model_name!r} (it serves {self.model_name!r})")
        point = self.points.get(split_point)
        if point is None or not point.plan.offload:
            raise FailedPrecondition(
                f"model {model_name!r} takes offloads at points {[i for i, p in self.points.items() if p.plan.offload]}, "
                f"the device sent point {split_point}: it runs a stale assignment"
            )
        logits = self._server_half(point, payloads)
        with self._count_lock:
            self.offloads += 1
        return logits, (time.perf_counter() - started) * 1e3

    def _server_half(self, point: ServerPoint, payloads: Sequence[bytes]) -> np.ndarray:
        import torch

        if not payloads:
            raise InvalidInput("offload request carries no payload")
        arrays = [decode(from_bytes(p)) for p in payloads]
        if any(a.ndim == 0 for a in arrays):
            raise InvalidInput("an offloaded payload must be a batch (a tensor with a leading batch axis), got a scalar")
        feature = arrays[0] if len(arrays) == 1 else _concat(arrays)
        if feature.dtype.kind == "f" and not np.isfinite(feature).all():
            raise InvalidInput(f"the offloaded feature at point {point.plan.index} holds NaN or infinite values")
        datatype = datatype_of(feature)
        want = self.inputs[0] if point.raw_input else point.link
        if want is not None and not want.accepts(datatype, feature.shape):
            raise InvalidInput(
                f"offloaded feature at point {point.plan.index} must be {want.datatype} with shape {list(want.shape)} "
                f"(-1 = any), got {datatype} with shape {list(feature.shape)}"
            )
        if feature.shape[0] > self.max_batch:
            raise InvalidInput(f"offloaded batch of {feature.shape[0]} exceeds the maximum of {self.max_batch}")
        x = images_to_float(feature) if point.raw_input else torch.from_numpy(np.ascontiguousarray(feature, dtype=np.float32))
        try:
            return self._run([self._load(n) for n in point.server_parts], x).float().numpy()
        except RuntimeError as exc:  # torch's shape errors: what arrived does not fit the tail
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InvalidInput(
                f"offloaded feature of shape {list(feature.shape)} does not fit point {point.plan.index}'s tail ({first})"
            ) from exc

    def reference(self, images: np.ndarray, split_point: int) -> np.ndarray:
        """What the split model computes in-process at ``split_point``: device half, codec, server half.

        Images are encoded one by one when the bundle says so (multi-point bundles), else as one
        batch, exactly as a device sends them.
        """
        point = self.points[self.nearest_point(split_point)]
        if not point.plan.offload:
            return self._run([self._load(n) for n in point.plan.device_parts], images_to_float(images)).float().numpy()
        if point.plan.device_parts:
            array = self._run([self._load(n) for n in point.plan.device_parts], images_to_float(images)).float().numpy()
        else:
            array = np.ascontiguousarray(images)
        chunks = [array[i : i + 1] for i in range(len(array))] if self.per_image else [array]
        payloads = [to_bytes(encode(c, bits=point.plan.codec_bits, compress=point.plan.codec_compress)) for c in chunks]
        return self._server_half(point, payloads)


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    shapes = {a.shape[1:] for a in arrays}
    types = {a.dtype for a in arrays}
    if len(shapes) != 1 or len(types) != 1:
        raise InvalidInput(f"the per-image payloads of one offload differ in shape or type: {sorted(map(str, shapes))}")
    return np.concatenate(arrays, axis=0)
