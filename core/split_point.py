"""A split point of a split bundle: its plan, the device half and the server half, batched.

A split bundle holds, for every split point, which parts run where. Two formats, one reader
(`load_split_plan`), one plan type (`PointPlan`):

* multi-point (written by ``coinfer split`` and the runtime fixtures): manifest metadata
  ``"split"`` with schema ``coinfer.split/1`` and one entry per point:
  point 0 (``"input"``) sends the raw uint8 image and the server runs part ``model``; points
  1..4 run ``pointP.head`` and ``pointP.encoder`` on the device and send the codec's bytes of the
  latent, and the server runs ``pointP.decoder`` and ``pointP.tail``; the last point
  (``"local"``) runs ``model`` on the device and sends nothing. Every image is its own message,
  so quantisation scales are per image.
* single-point (kind ``"split"``, the walking skeleton): parts found by role (``head``, ``tail``,
  optional ``encoder``/``decoder``), the point and the codec settings in the metadata; the batch
  travels as one message.

Both halves live here, in the shared core, because the edge daemon, the coordinator, the
profiler and the split-point training all run them, and must send and read the same bytes:

    point = SplitModel(bundle).points[2]       # or DeviceHalf/ServerHalf.from_bundle(bundle, 2)
    sent = point.device.run(images_uint8)     # what the device parts make of the images
    payloads = point.device.encode(sent)       # the wire messages
    logits = point.server(payloads)            # numpy (N, num_classes)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from coinfer.core.bundle import Bundle, TensorSpec
from coinfer.core.codec import datatype_of, decode, encode, from_bytes, to_bytes
from coinfer.core.data import to_float
from coinfer.core.errors import InvalidInput, NotFound
from coinfer.core.model_io import DEFAULT_MAX_BATCH, IMAGE_INPUT, LOGITS_OUTPUT

SPLIT_SCHEMA = "coinfer.split/1"
"""Schema of the multi-point format's ``metadata.split``."""
SPLIT_POINTS_KIND = "split-points"
"""Bundle kind the multi-point writers give."""
SPLIT_KIND = "split"
"""Bundle kind of the walking skeleton's single-point bundles."""
MODEL_PART = "model"
"""The whole backbone: the server's part at point 0, the device's at the last point."""
SAMPLES_PART = "samples"
"""A few uint8 test images and their labels (tensors "images", "labels"), for profiling."""
DEVICE_ROLES = ("head", "encoder")
"""Part roles a single-point bundle runs on the device, in order."""
SERVER_ROLES = ("decoder", "tail")
"""Part roles a single-point bundle runs on the server, in order."""

ModuleLoader = Callable[[str], Any]
"""part name -> its module, loaded and verified (`Bundle.load_module`)."""


@dataclass(frozen=True)
class PointPlan:
    """What each side runs at one split point, and how what crosses the link is encoded.

    Devices receive it in their assignment without ``server_parts`` (``coinfer.protos.v1``
    converts it to and from the wire).
    """

    index: int
    """Split point index (0 = the raw image is sent)."""
    name: str
    """The backbone's name for the point ("input", a layer name, "local")."""
    device_parts: tuple[str, ...]
    """Parts the device runs on the image, in order (empty at point 0: the image itself is sent)."""
    offload: bool
    """Whether the device sends its result to the server (False at the local point, where the
    device parts are the whole model)."""
    codec_bits: int
    """Codec quantisation bits of what is sent (0 = as it is)."""
    codec_compress: bool | None
    """Codec zlib stage: True, False, or None = only when it makes the payload smaller."""
    server_parts: tuple[str, ...] = ()
    """Parts the server runs on what arrives, in order (empty at the local point)."""

    @property
    def sends_image(self) -> bool:
        """Whether the uint8 image itself crosses the link (point 0)."""
        return self.offload and not self.device_parts


@dataclass(frozen=True)
class SplitPlan:
    """A split bundle's plan, read from either format and checked."""

    backbone: str
    dataset: str
    image: TensorSpec
    """The model's input: uint8 images (-1, C, H, W)."""
    logits: TensorSpec
    """The model's output: FP32 logits (-1, classes)."""
    points: tuple[PointPlan, ...]
    whole_model: tuple[str, ...]
    """Parts that run the whole model on the images, in order (a device answering alone)."""
    per_image: bool
    """Each image is its own message (multi-point); else the batch is one (single-point)."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(channels, height, width) of one input image."""
        return tuple(self.image.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[-1])

    def point(self, point: int | str) -> PointPlan:
        """A point by index or name; unknown points raise NotFound listing the valid ones."""
        for p in self.points:
            if p.index == point or p.name == point:
                return p
        valid = ", ".join(f"{p.index} ({p.name})" for p in self.points)
        raise NotFound(f"split point {point!r} is not in this bundle; valid points: {valid}")


# Reading a bundle's plan --------------------------------------------------------------------


def is_split_bundle(bundle: Bundle) -> bool:
    """Whether ``bundle`` holds a split model (either format)."""
    return bundle.kind == SPLIT_KIND or isinstance(bundle.metadata.get("split"), dict)


def load_split_plan(bundle: Bundle) -> SplitPlan:
    """Read and check the plan of a split bundle of either format; other bundles are refused.

    Every problem raises InvalidInput naming the bundle and the field
    (``metadata.split.points[2].bits``); a part the plan names but the bundle lacks, NotFound.
    """
    if bundle.kind == SPLIT_KIND and not isinstance(bundle.metadata.get("split"), dict):
        plan = _read_single_point(bundle)
    else:
        plan = _read_multi_point(bundle)
    for p in plan.points:
        for part in (*p.device_parts, *p.server_parts):
            bundle.part(part)  # NotFound names the missing part
    return plan


def _opt_str(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{where} must be a part name or null")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{where} must be a string, got {type(value).__name__}")
    return value


def _count(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{where} must be an integer >= {minimum}, got {value!r:.40}")
    return value


def _read_point(p: Any, where: str) -> PointPlan:
    if not isinstance(p, dict):
        raise InvalidInput(f"{where} must be an object, got {type(p).__name__}")
    for key in ("index", "name"):
        if key not in p:
            raise InvalidInput(f"{where} is missing field {key!r}")
    compress = p.get("compress", False)
    bits = p.get("bits", 0)
    if compress not in (True, False, None) or isinstance(bits, bool) or bits not in (0, 2, 4, 8):
        raise InvalidInput(f"{where}: bits must be 0, 2, 4 or 8 and compress true, false or null")
    head, encoder, decoder, tail = (_opt_str(p.get(role), f"{where}.{role}") for role in ("head", "encoder", "decoder", "tail"))
    offload = tail is not None
    return PointPlan(
        index=_count(p["index"], f"{where}.index", 0),
        name=_text(p["name"], f"{where}.name"),
        device_parts=tuple(x for x in ((head, encoder) if offload else (head,)) if x),
        offload=offload,
        codec_bits=int(bits) if offload else 0,
        codec_compress=compress if offload else False,
        server_parts=tuple(x for x in (decoder, tail) if x) if offload else (),
    )


def _read_multi_point(bundle: Bundle) -> SplitPlan:
    raw = bundle.metadata.get("split")
    if not isinstance(raw, dict) or raw.get("schema") != SPLIT_SCHEMA:
        raise InvalidInput(f"{bundle.path} is not a split bundle (no metadata.split with schema {SPLIT_SCHEMA!r})")
    where = f"{bundle.path}: metadata.split"
    for key in ("backbone", "dataset", "input_shape", "num_classes", "points"):
        if key not in raw:
            raise InvalidInput(f"{where} is missing field {key!r}")
    entries = raw["points"]
    if not isinstance(entries, list) or not entries:
        raise InvalidInput(f"{where}.points must be a non-empty list of point objects")
    points = tuple(_read_point(p, f"{where}.points[{i}]") for i, p in enumerate(entries))
    if len({p.index for p in points}) != len(points):
        raise InvalidInput(f"{where}.points: two points share an index ({[p.index for p in points]})")
    local = max(points, key=lambda p: p.index)
    if local.offload or not local.device_parts:
        raise InvalidInput(f"{bundle.path}: the last split point must run the whole model on the device")
    shape = raw["input_shape"]
    if not isinstance(shape, list) or len(shape) != 3:
        raise InvalidInput(f"{where}.input_shape must be [channels, height, width], got {shape!r:.60}")
    image_shape = tuple(_count(d, f"{where}.input_shape", 1) for d in shape)
    num_classes = _count(raw["num_classes"], f"{where}.num_classes", 1)
    return SplitPlan(
        backbone=_text(raw["backbone"], f"{where}.backbone"),
        dataset=_text(raw["dataset"], f"{where}.dataset"),
        image=TensorSpec(IMAGE_INPUT, "UINT8", (-1, *image_shape)),
        logits=TensorSpec(LOGITS_OUTPUT, "FP32", (-1, num_classes)),
        points=points,
        whole_model=local.device_parts,
        per_image=True,
    )


def _read_single_point(bundle: Bundle) -> SplitPlan:
    meta = bundle.metadata
    try:
        index, name = int(meta["split_point"]), str(meta.get("split_point_name", ""))
        bits, compress = int(meta.get("codec_bits", 0)), bool(meta.get("codec_compress", False))
    except KeyError as exc:
        raise InvalidInput(f"bundle {bundle.path}: metadata lacks {exc.args[0]!r}, which a split bundle needs") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"bundle {bundle.path}: malformed split metadata ({exc})") from exc
    roles = {spec.role: spec for spec in bundle.manifest.parts}
    for role in ("head", "tail"):
        if role not in roles:
            raise InvalidInput(f"split bundle {bundle.path} has no part with role {role!r}")
    device = tuple(roles[r].name for r in DEVICE_ROLES if r in roles)
    server = tuple(roles[r].name for r in SERVER_ROLES if r in roles)
    images, logits = roles["head"].inputs, roles["tail"].outputs
    if len(images) != 1 or len(logits) != 1:
        raise InvalidInput(f"split bundle {bundle.path}: the head must have one input and the tail one output")
    if len(bundle.part(server[0]).inputs) != 1:
        raise InvalidInput(f"split bundle {bundle.path}: part {server[0]!r} must declare one input")
    return SplitPlan(
        backbone=str(roles["head"].config.get("arch", "")),
        dataset=str(meta.get("dataset", "")),
        image=images[0],
        logits=logits[0],
        points=(PointPlan(index, name, device, True, bits, compress, server),),
        whole_model=device + server,
        per_image=False,
    )


# The two halves -------------------------------------------------------------------------------


def run_on_images(modules: Sequence, images: np.ndarray) -> np.ndarray:
    """uint8 images (N, C, H, W) scaled to [0, 1] and run through ``modules`` in order: float32 numpy."""
    return _run(modules, to_float(images))


def _run(modules: Sequence, x) -> np.ndarray:
    import torch

    with torch.inference_mode():
        for module in modules:
            x = module(x)
    return x.float().numpy()


def encode_message(array: np.ndarray, bits: int, compress: bool | None) -> bytes:
    """The exact wire bytes of one message."""
    return to_bytes(encode(array, bits=bits, compress=compress))


def codec_round_trip(batch, bits: int, compress: bool | None):
    """Send every sample of a torch batch through the codec as its own message.

    Returns (restored float32 torch batch, payload bytes per sample as a numpy int array): what
    the server receives from each of B devices, and what each paid on the wire.
    """
    import torch

    array = batch.detach().cpu().numpy()
    restored = np.empty(array.shape, dtype=np.float32)
    sizes = np.empty(len(array), dtype=np.int64)
    for i in range(len(array)):
        payload = encode_message(array[i : i + 1], bits, compress)
        sizes[i] = len(payload)
        restored[i : i + 1] = decode(from_bytes(payload))
    return torch.from_numpy(restored), sizes


def _check_modules(plan: PointPlan, parts: tuple[str, ...], modules: Sequence, side: str) -> list:
    if len(modules) != len(parts):
        raise InvalidInput(f"split point {plan.index}: {len(modules)} module(s) given for its {side} parts {list(parts)}")
    return [module.eval() for module in modules]


class DeviceHalf:
    """What a device runs at one split point: uint8 images -> what it sends, then the wire messages."""

    def __init__(self, plan: PointPlan, modules: Sequence, per_image: bool = True) -> None:
        self.plan = plan
        self.modules = _check_modules(plan, plan.device_parts, modules, "device")
        """The device parts' modules, in order, in evaluation mode."""
        self.per_image = per_image
        """One message per image; else one message for the batch."""

    @classmethod
    def from_bundle(cls, bundle: Bundle, point: int | str, plan: SplitPlan | None = None,
                    load: ModuleLoader | None = None) -> DeviceHalf:
        """The device half of ``point``, its parts loaded (hash-checked) from ``bundle``."""
        split = plan or load_split_plan(bundle)
        p = split.point(point)
        load = load or bundle.load_module
        return cls(p, [load(name) for name in p.device_parts], split.per_image)

    def run(self, images: np.ndarray) -> np.ndarray:
        """The device parts on uint8 images (N, C, H, W): the feature to send, the logits at the
        local point, or the images themselves at point 0."""
        if images.dtype != np.uint8 or images.ndim != 4:
            raise InvalidInput(f"device input must be uint8 images (N, C, H, W), got {images.dtype} of shape {list(images.shape)}")
        return run_on_images(self.modules, images) if self.modules else images

    def encode(self, sent: np.ndarray) -> list[bytes]:
        """The wire messages of what ``run`` gave (none at the local point, where nothing is sent)."""
        if not self.plan.offload:
            return []
        chunks = [sent[i : i + 1] for i in range(len(sent))] if self.per_image else [sent]
        return [encode_message(c, self.plan.codec_bits, self.plan.codec_compress) for c in chunks]

    def __call__(self, images: np.ndarray) -> list[bytes]:
        """The wire messages for uint8 images (empty at the local point)."""
        return self.encode(self.run(images))


class ServerHalf:
    """What the server runs at one split point: the messages of one offload -> logits (N, classes)."""

    def __init__(self, plan: PointPlan, modules: Sequence, arriving: TensorSpec | None,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.plan = _offloaded(plan)
        self.modules = _check_modules(plan, plan.server_parts, modules, "server")
        """The server parts' modules, in order, in evaluation mode."""
        self.arriving = arriving
        """Declared type and shape of what arrives (-1 = any size; None = not checked)."""
        self.max_batch = max_batch

    @classmethod
    def from_bundle(cls, bundle: Bundle, point: int | str, plan: SplitPlan | None = None,
                    load: ModuleLoader | None = None, max_batch: int = DEFAULT_MAX_BATCH) -> ServerHalf:
        """The server half of ``point``, its parts loaded (hash-checked) from ``bundle``."""
        split = plan or load_split_plan(bundle)
        p = _offloaded(split.point(point))
        if p.sends_image:
            arriving: TensorSpec | None = split.image
        else:
            declared = bundle.part(p.server_parts[0]).inputs
            arriving = declared[0] if len(declared) == 1 else None
        load = load or bundle.load_module
        return cls(p, [load(name) for name in p.server_parts], arriving, max_batch)

    def __call__(self, payloads: Sequence[bytes]) -> np.ndarray:
        """Logits of the messages one device sent (one per image, or one for the batch)."""
        import torch

        feature = self._receive(payloads)
        if self.plan.sends_image:
            x = to_float(feature)
        else:
            x = torch.from_numpy(np.ascontiguousarray(feature, dtype=np.float32))
        try:
            return _run(self.modules, x)
        except RuntimeError as exc:  # torch's shape errors: what arrived does not fit the tail
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InvalidInput(
                f"offloaded feature of shape {list(feature.shape)} does not fit point {self.plan.index}'s tail ({first})"
            ) from exc

    def _receive(self, payloads: Sequence[bytes]) -> np.ndarray:
        """The decoded batch, checked against what this point takes."""
        if not payloads:
            raise InvalidInput("offload request carries no payload")
        arrays = [decode(from_bytes(p)) for p in payloads]
        if any(a.ndim == 0 for a in arrays):
            raise InvalidInput("an offloaded payload must be a batch (a tensor with a leading batch axis), got a scalar")
        feature = arrays[0] if len(arrays) == 1 else _concat(arrays)
        if feature.dtype.kind == "f" and not np.isfinite(feature).all():
            raise InvalidInput(f"the offloaded feature at point {self.plan.index} holds NaN or infinite values")
        datatype = datatype_of(feature)
        want = self.arriving
        if want is not None and not want.accepts(datatype, feature.shape):
            raise InvalidInput(
                f"offloaded feature at point {self.plan.index} must be {want.datatype} with shape {list(want.shape)} "
                f"(-1 = any), got {datatype} with shape {list(feature.shape)}"
            )
        if feature.shape[0] > self.max_batch:
            raise InvalidInput(f"offloaded batch of {feature.shape[0]} exceeds the maximum of {self.max_batch}")
        return feature


def _offloaded(plan: PointPlan) -> PointPlan:
    if not plan.offload:
        raise InvalidInput(f"split point {plan.index} ({plan.name}) runs entirely on the device")
    return plan


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    shapes = {a.shape[1:] for a in arrays}
    types = {a.dtype for a in arrays}
    if len(shapes) != 1 or len(types) != 1:
        raise InvalidInput(f"the per-image payloads of one offload differ in shape or type: {sorted(map(str, shapes))}")
    return np.concatenate(arrays, axis=0)


# A whole bundle in one process ----------------------------------------------------------------


class SplitPoint:
    """Both halves of one split point in this process. The device half is loaded on first use:
    a server runs it only as a reference."""

    def __init__(self, plan: PointPlan, server: ServerHalf | None, device: Callable[[], DeviceHalf]) -> None:
        self.plan = plan
        self.server = server
        """None at the local point, where nothing is sent."""
        self._build_device = device
        self._device: DeviceHalf | None = None
        self._lock = threading.Lock()

    @property
    def device(self) -> DeviceHalf:
        with self._lock:
            if self._device is None:
                self._device = self._build_device()
            return self._device

    def reference(self, images: np.ndarray) -> np.ndarray:
        """Logits of uint8 images through this point as a device and the server compute them:
        device half, the wire's codec messages, server half."""
        sent = self.device.run(images)
        return sent if self.server is None else self.server(self.device.encode(sent))


class SplitModel:
    """A split bundle made runnable in one process: every point's halves and the whole model,
    each part loaded (hash-checked) once."""

    def __init__(self, bundle: Bundle, plan: SplitPlan | None = None, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.bundle = bundle
        self.plan = plan or load_split_plan(bundle)
        self._modules: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.points: dict[int, SplitPoint] = {
            p.index: SplitPoint(
                p,
                ServerHalf.from_bundle(bundle, p.index, self.plan, self._load, max_batch) if p.offload else None,
                partial(DeviceHalf.from_bundle, bundle, p.index, self.plan, self._load),
            )
            for p in self.plan.points
        }
        self._whole = [self._load(name) for name in self.plan.whole_model]

    def _load(self, name: str):
        with self._lock:
            if name not in self._modules:
                self._modules[name] = self.bundle.load_module(name)
            return self._modules[name]

    def run_whole(self, images: np.ndarray) -> np.ndarray:
        """Logits of the whole model run here on uint8 images (no link, no quantisation)."""
        return run_on_images(self._whole, images)


def load_samples(bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
    """The sample images (uint8 N x C x H x W) and labels a split bundle carries."""
    state = bundle.load_state(SAMPLES_PART)
    if "images" not in state or "labels" not in state:
        raise InvalidInput(f"{bundle.path}: part {SAMPLES_PART!r} must hold tensors 'images' and 'labels'")
    return state["images"].numpy(), state["labels"].numpy()
