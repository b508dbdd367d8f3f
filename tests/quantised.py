"""Comparisons of quantised paths that hold on every CPU kernel and thread count.

Every test that compares something that went through the codec (`coinfer.core.codec`) with a
reference goes through here. The codec quantises each message min-max, uniformly:
code = rint(x / scale) + zero_point, decoded = scale * (code - zero_point), with scale = range /
(2^bits - 1). Two runs of the same model on different kernels (AVX2, AVX512, NEON), thread
counts or batch sizes compute features that differ by float32 rounding only, but an element that
lies within that rounding of a half-step rounds to neighbouring codes on the two sides: its decoded
value moves by exactly one step, and everything after the codec inherits that step. So a
quantised path is compared in one of three ways:

* same codes: `assert_quantised_like_codec` checks a decoded tensor against the codec run on the
  same float input: equal up to float rounding, except elements sitting on a rounding boundary,
  which may be exactly one step away;
* bounded by the step: `expected_logits` runs a split model's two halves here and bounds, per
  logit, how far another run may be: one step (the scale read from the encoded message) at each
  element that could round the other way, through the server half's gradient;
* predictions, where agreement is the claim: `assert_predictions_agree` prints the agreement rate.

What follows from the codes goes through here too: an accuracy measured by another run
(`assert_accuracy_reproduced`: up to the predictions the bound leaves undecided) and payload sizes
behind zlib (`payload_slack_bytes`). Float paths (no codec) compare with `assert_float_close`,
relative to the tensor's magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from coinfer.core.bundle import Bundle
from coinfer.core.codec import decode, encode, from_bytes, to_bytes
from coinfer.core.measure import torch_threads
from suite_threads import suite_threads

KERNEL_RTOL = 1e-5
"""How far two float32 runs of one model may drift apart on different kernels, thread counts or
batch sizes, relative to the largest magnitude of the tensor compared. Reordering a length-K sum
moves it by about sqrt(K) u of its terms' magnitude (u = 6e-8), and the drifts of L layers add
like a random walk: sqrt(L K) u = 1e-5 for the deepest models here (L ~ 20, K <= 1152). The
largest drift measured on the development machine (AVX2 against default kernels, oneDNN at SSE4.1
against AVX2, one image against a batch of 359, 1 against 2 threads) was 7.5e-7."""

KINK_FACTOR = 2.0
"""The step bound goes through the server half's gradient at the reference; a one-step move can
cross ReLU kinks, where the slope changes, so the linear estimate is doubled."""


@dataclass(frozen=True)
class SplitHalves:
    """One split point of a split bundle, read from its parts (independently of the runtime)."""

    device: Callable[[torch.Tensor], torch.Tensor] | None
    """Float images in [0, 1] -> what the device encodes (None at point 0: the uint8 image itself)."""
    server: Callable[[torch.Tensor], torch.Tensor] | None
    """What arrives, decoded -> logits (None at the local point: the device's output is the answer)."""
    bits: int
    """Codec bits of what crosses (0 = sent exactly: float32 or the uint8 image)."""
    per_image: bool
    """One message per image (multi-point bundles) or one per request (single-point bundles)."""


def split_halves(bundle: Bundle, point: int | None = None) -> SplitHalves:
    """The halves of ``point`` (multi-point bundles) or of the bundle's one point (``point=None``)."""
    split = bundle.metadata.get("split")
    if isinstance(split, dict):
        entry = next(p for p in split["points"] if p["index"] == point)
        device = [bundle.load_module(entry[r]).eval() for r in ("head", "encoder") if entry[r]]
        server = [bundle.load_module(entry[r]).eval() for r in ("decoder", "tail") if entry[r]]
        if entry["index"] == 0:  # the uint8 image crosses; the server scales it as the device would have
            server = [_scale_image, *server]
        return SplitHalves(_chain(device) if device else None, _chain(server) if server else None,
                           int(entry["bits"]), per_image=True)
    roles = {spec.role: spec.name for spec in bundle.manifest.parts}
    device = [bundle.load_module(roles[r]).eval() for r in ("head", "encoder") if r in roles]
    server = [bundle.load_module(roles[r]).eval() for r in ("decoder", "tail") if r in roles]
    return SplitHalves(_chain(device), _chain(server), int(bundle.metadata.get("codec_bits", 0)), per_image=False)


def _scale_image(x: torch.Tensor) -> torch.Tensor:
    return x / 255.0


def _chain(modules: list) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        for module in modules:
            x = module(x)
        return x

    return run


@dataclass(frozen=True)
class ExpectedLogits:
    """Logits of a split point run here, and how far another kernel's run of it may be."""

    logits: np.ndarray
    bound: np.ndarray
    """Per logit: the largest difference the arithmetic allows (same shape as ``logits``)."""
    uncertain: np.ndarray
    """Per image: feature elements close enough to a rounding boundary to take the other code."""

    def check(self, got: np.ndarray, what: str = "logits") -> None:
        """Assert that ``got`` is within the bound, and print how close it came."""
        got = np.asarray(got, dtype=np.float32)
        assert got.shape == self.logits.shape, f"{what}: shape {got.shape}, expected {self.logits.shape}"
        diff = np.abs(got - self.logits)
        print(f"{what}: largest difference {float(diff.max(initial=0)):.2e}, "
              f"{float((diff / self.bound).max(initial=0)):.2f} of its bound "
              f"({int(self.uncertain.sum())} feature elements near a rounding boundary)")
        bad = np.argwhere(diff > self.bound)
        assert not len(bad), (
            f"{what}: {len(bad)} of {diff.size} logits differ by more than the quantisation allows; first at "
            f"{tuple(bad[0])}: {got[tuple(bad[0])]:.6g} vs {self.logits[tuple(bad[0])]:.6g} "
            f"(bound {self.bound[tuple(bad[0])]:.2e})"
        )

    def undecided(self) -> np.ndarray:
        """Per image: whether another run may predict another class (the top two are within their bounds)."""
        order = np.argsort(-self.logits, axis=1)
        rows = np.arange(len(self.logits))
        first, second = order[:, 0], order[:, 1]
        gap = self.logits[rows, first] - self.logits[rows, second]
        return gap <= self.bound[rows, first] + self.bound[rows, second]


def expected_logits(halves: SplitHalves, images: np.ndarray) -> ExpectedLogits:
    """The split point's logits for uint8 ``images`` run here, each with its bound.

    Run at one thread unless COINFER_TEST_THREADS says otherwise: the bound holds whatever the
    reference's thread count, and on shared cores a second thread can make small work 100x slower.
    """
    with torch_threads(suite_threads(1)):
        return _expected_logits(halves, images)


def _expected_logits(halves: SplitHalves, images: np.ndarray) -> ExpectedLogits:
    x = torch.from_numpy(np.ascontiguousarray(images))
    with torch.inference_mode():
        if halves.device is None:
            sent = x
        else:
            sent = halves.device(x.float().div(255.0))
    if halves.server is None:  # the local point: nothing crosses
        logits = sent.float().numpy()
        return ExpectedLogits(logits, _float_bound(logits), np.zeros(len(logits), np.int64))
    if halves.bits == 0:  # sent exactly
        with torch.inference_mode():
            logits = halves.server(sent.float()).numpy()
        return ExpectedLogits(logits, _float_bound(logits), np.zeros(len(logits), np.int64))

    feature = sent.numpy()
    chunks = [feature[i : i + 1] for i in range(len(feature))] if halves.per_image else [feature]
    decoded, move, flips = [], [], []
    for chunk in chunks:
        message = from_bytes(to_bytes(encode(chunk, bits=halves.bits)))
        decoded.append(decode(message))
        # Another run computes each element within delta; with the range's ends moved by up to
        # delta each, every decoded value moves by up to 2 delta even where its code holds.
        delta = KERNEL_RTOL * float(np.abs(chunk).max(initial=0.0))
        at_risk = _rounding_risk(chunk, message.scale, message.zero_point, halves.bits, delta)
        flips.append(at_risk * np.float32(message.scale))
        move.append(np.full(chunk.shape, 2 * delta, np.float32))
    received = torch.from_numpy(np.concatenate(decoded)).requires_grad_(True)
    logits_t = halves.server(received)
    logits = logits_t.detach().numpy()
    # Per image and logit: sum over elements of |d logit / d element| x how far that element may move.
    may_move = torch.from_numpy(np.concatenate(flips) + np.concatenate(move))
    bound = np.empty_like(logits)
    for k in range(logits.shape[1]):
        (grad,) = torch.autograd.grad(logits_t[:, k].sum(), received, retain_graph=k + 1 < logits.shape[1])
        bound[:, k] = (grad.abs() * may_move).flatten(1).sum(1).numpy()
    bound = KINK_FACTOR * bound + _float_bound(logits)
    per_image = (np.concatenate(flips) > 0).reshape(len(logits), -1).sum(1)
    return ExpectedLogits(logits, bound, per_image)


def payload_slack_bytes(expected: ExpectedLogits, payload: bytes) -> int:
    """How far a total of one payload per image may move on another run, zlib sizes depending on the codes.

    Only images with a feature on a rounding boundary may get other codes, and a message with
    other codes is still between its smallest zlib size and its uncompressed size: so, for each
    such image, the size of ``payload``'s message uncompressed.
    """
    message = from_bytes(payload)
    uncompressed = len(to_bytes(encode(np.zeros(message.shape, np.float32), bits=message.bits)))
    return int((expected.uncertain > 0).sum()) * uncompressed


def float_logits(halves: SplitHalves, images: np.ndarray) -> np.ndarray:
    """The split point's logits with the codec left out: float32 from the image to the answer."""
    with torch_threads(suite_threads(1)), torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(images))
        sent = x if halves.device is None else halves.device(x.float().div(255.0))
        return sent.float().numpy() if halves.server is None else halves.server(sent.float()).numpy()


def _rounding_risk(values: np.ndarray, scale: float, zero_point: int, bits: int, delta: float) -> np.ndarray:
    """Elements of one message that may round to a neighbouring code when each value may be off by ``delta``.

    Off by delta, the range's ends move by up to delta each, so the scale moves by up to
    2 delta / range and an element's position in steps by up to 3 delta / scale.
    """
    values = np.asarray(values, dtype=np.float32)
    steps = values.astype(np.float64) / scale
    margin = 3 * delta / scale
    at_risk = np.abs(steps - np.floor(steps) - 0.5) <= margin
    # The zero point is rounded too: if it can land either way, codes at the ends of the range may clip.
    offset = -float(min(values.min(initial=0.0), 0.0)) / scale
    if abs(offset - np.floor(offset) - 0.5) <= margin:
        codes = np.clip(np.rint(values / np.float32(scale)) + zero_point, 0, (1 << bits) - 1)
        at_risk |= (codes == 0) | (codes == (1 << bits) - 1)
    return at_risk


def _float_bound(reference: np.ndarray) -> np.ndarray:
    scale = float(np.abs(reference).max(initial=0.0))
    return np.full(reference.shape, KERNEL_RTOL * scale + np.finfo(np.float32).tiny, np.float32)


def assert_float_close(got: np.ndarray, want: np.ndarray, what: str = "values") -> None:
    """Float32 results of one model on two kernels, thread counts or batchings: close relative to their size."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    np.testing.assert_allclose(got, want, rtol=0, atol=float(_float_bound(want).flat[0]) if want.size else 0, err_msg=what)


def assert_quantised_like_codec(got: np.ndarray, values: np.ndarray, bits: int, what: str = "decoded") -> None:
    """``got`` (a decoded tensor, one message) holds what the codec makes of float ``values``.

    Equal up to float rounding wherever the codes agree; an element that sits on a rounding
    boundary may be one step away (the step read from the encoded message), no further.
    """
    values = np.asarray(values, dtype=np.float32)
    message = from_bytes(to_bytes(encode(values, bits=bits)))
    wire, step = decode(message), float(message.scale)
    got = np.asarray(got, dtype=np.float32)
    assert got.shape == wire.shape, f"{what}: shape {got.shape}, expected {wire.shape}"
    # Both sides round the same floats, but may compute the scale (range / levels) in float32 or
    # float64 and restore with other operations: about 4.5 eps of the largest magnitude in all
    # (3 eps from a scale off by 3 roundings times up to 2^bits - 1 steps, the rest from the
    # restoring products and sums); 8 eps covers it.
    rounding = 8 * float(np.finfo(np.float32).eps) * float(np.abs(values).max(initial=0.0))
    at_risk = _rounding_risk(values, step, message.zero_point, bits, rounding)
    diff = np.abs(got - wire)
    allowed = np.where(at_risk, step + rounding, rounding)
    flipped = int((diff > rounding).sum())
    print(f"{what}: {bits}-bit step {step:.3g}; {flipped} of {diff.size} elements one step away "
          f"({int(at_risk.sum())} on a rounding boundary)")
    bad = np.argwhere(diff > allowed)
    assert not len(bad), (
        f"{what}: {len(bad)} of {diff.size} elements differ from the codec by more than float rounding, "
        f"first at {tuple(bad[0])}: {got[tuple(bad[0])]:.6g} vs {wire[tuple(bad[0])]:.6g} (step {step:.3g})"
    )


def assert_predictions_agree(got: np.ndarray, want: np.ndarray, min_rate: float, what: str = "predictions") -> float:
    """Where the claim is the prediction: argmax agreement of two logit arrays, printed; returns the rate."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.ndim == 2, f"{what}: shapes {got.shape} and {want.shape}"
    rate = float((got.argmax(1) == want.argmax(1)).mean())
    print(f"{what}: argmax agreement {rate:.4f} over {len(got)} (at least {min_rate:.4f} required)")
    assert rate >= min_rate, f"{what}: argmax agreement {rate:.4f} is below {min_rate:.4f}"
    return rate


def assert_accuracy_reproduced(logits: np.ndarray, labels: np.ndarray, reported_accuracy: float,
                               expected: ExpectedLogits | None = None, what: str = "accuracy") -> None:
    """An accuracy another run measured on the same images, recomputed from ``logits``.

    That run (other batches, thread counts, kernels, or codes flipped on rounding boundaries) may
    decide an image otherwise only where the top two logits are within what it may change: the
    bounds of ``expected``, or float rounding around ``logits`` when it is not given.
    """
    logits, labels = np.asarray(logits, np.float32), np.asarray(labels)
    if expected is None:
        expected = ExpectedLogits(logits, _float_bound(logits), np.zeros(len(logits), np.int64))
    right = logits.argmax(1) == labels
    undecided = expected.undecided()
    correct, reported = int(right.sum()), reported_accuracy * len(labels)
    # Undecided images right here may be wrong there, and those wrong here may be right there.
    low, high = correct - int((undecided & right).sum()), correct + int((undecided & ~right).sum())
    print(f"{what}: {correct} of {len(labels)} correct here, {reported:.2f} reported; "
          f"{int(undecided.sum())} predictions undecided within the bound")
    slack = 1e-6 * len(labels)  # the reported fraction's rounding
    assert low - slack <= reported <= high + slack, (
        f"{what}: {reported:.2f} of {len(labels)} reported correct, but the undecided predictions allow "
        f"{low} to {high}")
