"""Run a split bundle: the device half of a split point, the wire bytes, and the server half.

A split bundle (written by ``coinfer split``) holds, for every split point, which parts run
where. Its manifest metadata carries a ``"split"`` section (schema ``coinfer.split/1``) with one
entry per point:

* point 0 (``"input"``): the device sends the raw uint8 image; the server runs part ``model``;
* points 1..4: the device runs ``pointP.head`` and ``pointP.encoder`` and sends
  ``to_bytes(encode(latent, bits, compress))``; the server decodes, runs ``pointP.decoder`` and
  ``pointP.tail``;
* point 5 (``"local"``): the device runs ``model`` and sends nothing.

Every image is its own message (batch-1 payloads, as on the wire), so quantisation scales are
per image. Both halves live here, in the shared core, because the edge daemon, the server and
the profiler all run them.

    plan = load_split_plan(bundle)
    device, server = DeviceSide.from_bundle(bundle, 2), ServerSide.from_bundle(bundle, 2)
    payload = device(image_uint8)            # bytes on the wire (b"" at the last point)
    logits = server(payload)                 # numpy (1, num_classes)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from coinfer.core.bundle import Bundle
from coinfer.core.codec import decode, encode, from_bytes, to_bytes
from coinfer.core.errors import InvalidInput, NotFound

SPLIT_SCHEMA = "coinfer.split/1"
MODEL_PART = "model"
"""The whole backbone: the server's part at point 0, the device's at the last point."""
SAMPLES_PART = "samples"
"""A few uint8 test images and their labels (tensors "images", "labels"), for profiling."""


@dataclass(frozen=True)
class PointPlan:
    """Which bundle parts one split point runs on each side, and how its latent is encoded."""

    index: int
    """Split point index, 0..5."""
    name: str
    """The backbone's name for the point ("input", a layer name, "local")."""
    head: str | None
    """Device part run on the image (None at point 0)."""
    encoder: str | None
    """Device part run on the head's feature (None at points 0 and 5)."""
    decoder: str | None
    """Server part run on the decoded latent (None at points 0 and 5)."""
    tail: str | None
    """Server part producing the logits (None at the last point)."""
    bits: int
    """Codec quantisation bits of the latent (0 = float32; 0 at points 0 and 5)."""
    compress: bool | None
    """Codec zlib stage: True, False, or None = only when it makes the payload smaller."""


@dataclass(frozen=True)
class SplitPlan:
    """The ``split`` section of a bundle's metadata, validated."""

    backbone: str
    dataset: str
    input_shape: tuple[int, int, int]
    """(channels, height, width) of one uint8 input image."""
    num_classes: int
    points: tuple[PointPlan, ...]

    def point(self, point: int | str) -> PointPlan:
        """A point by index or name; unknown points raise NotFound listing the valid ones."""
        for p in self.points:
            if p.index == point or p.name == point:
                return p
        valid = ", ".join(f"{p.index} ({p.name})" for p in self.points)
        raise NotFound(f"split point {point!r} is not in this bundle; valid points: {valid}")


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
    return PointPlan(
        index=_count(p["index"], f"{where}.index", 0),
        name=_text(p["name"], f"{where}.name"),
        head=_opt_str(p.get("head"), f"{where}.head"),
        encoder=_opt_str(p.get("encoder"), f"{where}.encoder"),
        decoder=_opt_str(p.get("decoder"), f"{where}.decoder"),
        tail=_opt_str(p.get("tail"), f"{where}.tail"),
        bits=int(bits),
        compress=compress,
    )


def load_split_plan(bundle: Bundle) -> SplitPlan:
    """Read and check the split section of a bundle; a bundle of another kind is refused.

    Every problem raises InvalidInput naming the bundle and the field (``metadata.split.points[2].bits``).
    """
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
    shape = raw["input_shape"]
    if not isinstance(shape, list) or len(shape) != 3:
        raise InvalidInput(f"{where}.input_shape must be [channels, height, width], got {shape!r:.60}")
    plan = SplitPlan(
        backbone=_text(raw["backbone"], f"{where}.backbone"),
        dataset=_text(raw["dataset"], f"{where}.dataset"),
        input_shape=tuple(_count(d, f"{where}.input_shape", 1) for d in shape),  # type: ignore[arg-type]
        num_classes=_count(raw["num_classes"], f"{where}.num_classes", 1),
        points=points,
    )
    for p in plan.points:
        for part in (p.head, p.encoder, p.decoder, p.tail):
            if part is not None:
                bundle.part(part)  # NotFound names the missing part
    return plan


def encode_latent(latent: np.ndarray, bits: int, compress: bool | None) -> bytes:
    """The exact wire payload of one message."""
    return to_bytes(encode(latent, bits=bits, compress=compress))


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
        payload = encode_latent(array[i : i + 1], bits, compress)
        sizes[i] = len(payload)
        restored[i : i + 1] = decode(from_bytes(payload))
    return torch.from_numpy(restored), sizes


class DeviceSide:
    """What a device runs at one split point: image (uint8) -> wire payload (bytes)."""

    def __init__(self, plan: PointPlan, head=None, encoder=None) -> None:
        if (plan.head is None) != (head is None) or (plan.encoder is None) != (encoder is None):
            raise InvalidInput(f"split point {plan.index}: the modules given do not match its plan")
        self.plan = plan
        self.head = head.eval() if head is not None else None
        self.encoder = encoder.eval() if encoder is not None else None
        self.last_logits: np.ndarray | None = None
        """Logits of the last call at the local point (where nothing is sent)."""

    @classmethod
    def from_bundle(cls, bundle: Bundle, point: int | str, plan: SplitPlan | None = None) -> "DeviceSide":
        """The device side of ``point``, its parts loaded (hash-checked) from ``bundle``."""
        p = (plan or load_split_plan(bundle)).point(point)
        return cls(p, bundle.load_module(p.head) if p.head else None,
                   bundle.load_module(p.encoder) if p.encoder else None)

    def __call__(self, image: np.ndarray) -> bytes:
        """Payload for one uint8 image, (C, H, W) or (1, C, H, W); b"" at the local point."""
        import torch

        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise InvalidInput(f"device input must be a uint8 image, got {image.dtype}")
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4 or image.shape[0] != 1:
            raise InvalidInput(f"device input must be one image (C, H, W), got shape {list(image.shape)}")
        if self.head is None:  # point 0: the raw image is the message
            return to_bytes(encode(image))
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)
            feature = self.head(x)
            if self.encoder is None:  # the local point: the head is the whole network
                self.last_logits = feature.numpy()
                return b""
            latent = self.encoder(feature)
        return encode_latent(latent.numpy(), self.plan.bits, self.plan.compress)


class ServerSide:
    """What the server runs at one split point: wire payload -> logits (numpy, 1 x classes)."""

    def __init__(self, plan: PointPlan, tail, decoder=None, expected_shape: tuple[int, ...] | None = None) -> None:
        if plan.tail is None:
            raise InvalidInput(f"split point {plan.index} ({plan.name}) runs entirely on the device")
        if (plan.decoder is None) != (decoder is None):
            raise InvalidInput(f"split point {plan.index}: the modules given do not match its plan")
        self.plan = plan
        self.tail = tail.eval()
        self.decoder = decoder.eval() if decoder is not None else None
        self.expected_shape = tuple(expected_shape) if expected_shape is not None else None
        """Shape the received tensor must have (the image at point 0, the latent elsewhere)."""

    @classmethod
    def from_bundle(cls, bundle: Bundle, point: int | str, plan: SplitPlan | None = None) -> "ServerSide":
        """The server side of ``point``, its parts loaded (hash-checked) from ``bundle``."""
        split = plan or load_split_plan(bundle)
        p = split.point(point)
        if p.tail is None:
            raise InvalidInput(f"split point {p.index} ({p.name}) runs entirely on the device")
        decoder = bundle.load_module(p.decoder) if p.decoder else None
        if decoder is not None:
            expected = decoder.config.latent_shape(1)
        else:
            expected = (1, *split.input_shape)
        return cls(p, bundle.load_module(p.tail), decoder, expected)

    def __call__(self, payload: bytes) -> np.ndarray:
        import torch

        received = decode(from_bytes(payload))
        if self.expected_shape is not None and tuple(received.shape) != self.expected_shape:
            raise InvalidInput(f"split point {self.plan.index} expects a tensor of shape {list(self.expected_shape)}, "
                               f"the payload holds {list(received.shape)}")
        if self.decoder is None and received.dtype != np.uint8:
            raise InvalidInput(f"split point 0 expects a UINT8 image, the payload holds {received.dtype}")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(received)).float()
            if self.decoder is None:  # point 0: a uint8 image
                x = x.div_(255.0)
            else:
                x = self.decoder(x)
            return self.tail(x).numpy()


def load_samples(bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
    """The sample images (uint8 N x C x H x W) and labels a split bundle carries."""
    state = bundle.load_state(SAMPLES_PART)
    if "images" not in state or "labels" not in state:
        raise InvalidInput(f"{bundle.path}: part {SAMPLES_PART!r} must hold tensors 'images' and 'labels'")
    return state["images"].numpy(), state["labels"].numpy()
