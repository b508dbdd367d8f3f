"""The shared comparison of quantised paths (tests/quantised.py) accepts what kernels may do and nothing more."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coinfer.core.codec import decode, encode, to_bytes
from quantised import (KERNEL_RTOL, ExpectedLogits, SplitHalves, assert_accuracy_reproduced, assert_float_close,
                       assert_predictions_agree, assert_quantised_like_codec, expected_logits, payload_slack_bytes)


def _halves(bits: int, per_image: bool, seed: int = 0, on_boundaries: bool = False) -> SplitHalves:
    """A small split model; ``on_boundaries`` moves every feature to a half-step of its message's codec."""
    torch.manual_seed(seed)
    device = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 24), torch.nn.ReLU()).eval()
    server = torch.nn.Sequential(torch.nn.Linear(24, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5)).eval()
    if on_boundaries:
        levels = (1 << bits) - 1
        plain = device

        def device(x: torch.Tensor) -> torch.Tensor:
            f = plain(x)
            top = f.amax(dim=1, keepdim=True) if per_image else f.max()
            step = top / levels
            snapped = (torch.floor(f / step).clamp(max=levels - 1) + 0.5) * step
            return torch.where(f == top, top, snapped)  # the largest value keeps the range

    return SplitHalves(device, server, bits, per_image)


def _images(n: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 1, 4, 4), dtype=np.uint8)


def _codes_and_logits(halves: SplitHalves, feature: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    chunks = [feature[i : i + 1] for i in range(len(feature))] if halves.per_image else [feature]
    messages = [encode(c, bits=halves.bits) for c in chunks]
    codes = np.concatenate([np.rint(decode(m) / m.scale) for m in messages])
    with torch.inference_mode():
        return codes, halves.server(torch.from_numpy(np.concatenate([decode(m) for m in messages]))).numpy()


@pytest.mark.parametrize(("bits", "per_image", "on_boundaries"),
                         [(8, True, False), (8, False, False), (8, True, True), (4, True, True), (2, False, True)])
def test_another_kernels_rounding_stays_inside_the_bound(bits: int, per_image: bool, on_boundaries: bool) -> None:
    """Features off by the drift the bound assumes (KERNEL_RTOL) flip codes; the logits stay inside."""
    halves, images = _halves(bits, per_image, on_boundaries=on_boundaries), _images(256)
    expected = expected_logits(halves, images)
    with torch.inference_mode():
        feature = halves.device(torch.from_numpy(images).float().div(255.0)).numpy()
    codes, _ = _codes_and_logits(halves, feature)
    rng = np.random.default_rng(1)
    flipped = 0
    for _ in range(10):
        scale = np.abs(feature).max(axis=tuple(range(1, feature.ndim)), keepdims=True) if per_image else np.abs(feature).max()
        drifted = feature + (rng.uniform(-1, 1, feature.shape) * KERNEL_RTOL * scale).astype(np.float32)
        drifted_codes, got = _codes_and_logits(halves, drifted)
        flipped += int((drifted_codes != codes).sum())
        expected.check(got, "drifted")
    print(f"{flipped} codes flipped")
    assert flipped > 0, "the drift never moved a code: this test would not notice a bound that is too tight"


def test_a_wrong_model_or_a_missing_codec_is_outside_the_bound() -> None:
    halves, images = _halves(8, True), _images()
    expected = expected_logits(halves, images)
    with pytest.raises(AssertionError, match="differ by more than the quantisation allows"):
        expected.check(expected_logits(_halves(8, True, seed=1), images).logits, "another model")
    with torch.inference_mode():
        unquantised = halves.server(halves.device(torch.from_numpy(images).float().div(255.0))).numpy()
    with pytest.raises(AssertionError, match="differ by more than the quantisation allows"):
        expected.check(unquantised, "the codec skipped")


def test_codes_of_the_codec_pass_and_a_step_off_the_boundary_fails() -> None:
    values = np.random.default_rng(2).normal(size=(1, 3, 5, 5)).astype(np.float32) * 7
    wire = decode(encode(values, bits=4))
    assert_quantised_like_codec(wire, values, bits=4)
    step = float(encode(values, bits=4).scale)
    off = wire.copy()
    off.flat[0] += step  # a whole step where the value is nowhere near a rounding boundary
    with pytest.raises(AssertionError, match="differ from the codec"):
        assert_quantised_like_codec(off, values, bits=4)
    # A value exactly on a boundary may round either way: one step is what the arithmetic allows.
    on_boundary = values.copy()
    on_boundary.flat[1] = np.float32(2.5 * step)
    wire = decode(encode(on_boundary, bits=4))
    other_way = wire.copy()
    other_way.flat[1] += step if wire.flat[1] < on_boundary.flat[1] else -step
    assert_quantised_like_codec(other_way, on_boundary, bits=4)


def test_float_results_compare_relative_to_their_magnitude() -> None:
    want = np.array([[1000.0, -3.0]], np.float32)
    assert_float_close(want + np.float32(KERNEL_RTOL * 500), want)
    with pytest.raises(AssertionError):
        assert_float_close(want + np.float32(KERNEL_RTOL * 2000), want)


def test_prediction_agreement_is_printed_and_enforced(capsys) -> None:
    want = np.eye(4, dtype=np.float32)
    got = want.copy()
    got[0] = [0, 1, 0, 0]
    assert assert_predictions_agree(got, want, 0.75) == 0.75
    assert "argmax agreement 0.7500 over 4" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="below 0.8000"):
        assert_predictions_agree(got, want, 0.8)


def test_a_prediction_is_undecided_when_the_top_two_are_within_their_bounds() -> None:
    logits = np.array([[2.0, 1.99, 0.0], [2.0, 1.0, 0.0]], np.float32)
    expected = ExpectedLogits(logits, np.full(logits.shape, 0.01, np.float32), np.zeros(2, np.int64))
    assert expected.undecided().tolist() == [True, False]


def test_a_reported_accuracy_is_reproduced_up_to_the_undecided_images() -> None:
    logits = np.array([[2.0, 2.0 - 1e-6], [2.0, 1.0], [0.0, 1.0]], np.float32)  # the first is a near tie
    labels = np.array([1, 0, 1])
    assert_accuracy_reproduced(logits, labels, 3 / 3)  # another run may have taken the tie the other way
    assert_accuracy_reproduced(logits, labels, 2 / 3)
    with pytest.raises(AssertionError, match="allow 2 to 3"):
        assert_accuracy_reproduced(logits, labels, 1 / 3)  # the decided images are right here


def test_payload_sizes_may_move_by_an_uncompressed_message_per_uncertain_image() -> None:
    logits = np.zeros((3, 2), np.float32)
    payload = to_bytes(encode(np.arange(64, dtype=np.float32).reshape(1, 4, 4, 4), bits=4, compress=True))
    uncompressed = len(to_bytes(encode(np.zeros((1, 4, 4, 4), np.float32), bits=4)))
    certain = ExpectedLogits(logits, np.ones_like(logits), np.array([0, 0, 0]))
    assert payload_slack_bytes(certain, payload) == 0
    assert payload_slack_bytes(ExpectedLogits(logits, np.ones_like(logits), np.array([0, 2, 1])), payload) == 2 * uncompressed
