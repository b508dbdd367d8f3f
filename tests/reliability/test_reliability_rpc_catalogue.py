"""Every malformed-request case of `coinfer.bench.malformed` against every daemon that serves it.

Each case is sent three times (three seeds) to every front door of the in-process cluster that
serves its method; each answer must be the case's precise status with a message, and after
every case the daemon must still answer a valid request correctly. Cases that expose a bug in
the runtime are marked xfail (strict) with the bug named, until the fix lands.
"""

from __future__ import annotations

import random
from dataclasses import replace

import grpc
import numpy as np
import pytest

from coinfer.core.codec import tensor_from_raw
from coinfer.protos import inference_pb2 as pb
from coinfer.serving.security import open_channel
from coinfer.bench.malformed import CASES, FuzzTarget, target_from_bundles, valid_infer
from coinfer.bench.raw_calls import send

from reliability_helpers import DEVIT_MODEL, MAX_MESSAGE_BYTES, SPLIT_MODEL

DEADLINE_S = 20.0
SEEDS = (0, 1, 2)

# Bugs the catalogue found in runtime code; each entry is (case, reason). See the report.
KNOWN_BUGS: dict[str, str] = {}


@pytest.fixture(scope="module")
def targets(cluster, split_bundle, devit_bundle) -> dict[str, FuzzTarget]:
    """One FuzzTarget per edge (the sub-model it holds) plus the coordinator's."""
    base = target_from_bundles(split_bundle, devit_bundle, max_message_bytes=MAX_MESSAGE_BYTES)
    out = {"coordinator": base}
    for i, edge in enumerate(cluster.edges):
        held = edge.daemon.assignment.submodels[0]
        out[f"edge-{i}"] = replace(base, submodel=(held.model_name, held.bundle, held.part))
    return out


def _case_params():
    params = []
    for case in CASES:
        roles = {"oip": ("coordinator", "edge-0", "edge-1"), "coordinator": ("coordinator",), "edge": ("edge-0", "edge-1")}[case.service]
        for role in roles:
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[case.name])] if case.name in KNOWN_BUGS else []
            params.append(pytest.param(case, role, id=f"{case.name}@{role}", marks=marks))
    return params


def _check_still_serving(channel: grpc.Channel, target: FuzzTarget, rng: random.Random) -> None:
    for model in (SPLIT_MODEL, DEVIT_MODEL):
        outcome = send(channel, valid_infer(target, model, rng), DEADLINE_S)
        assert outcome.code == grpc.StatusCode.OK, f"valid {model} request after a malformed one: {outcome}"
        reply = pb.ModelInferResponse.FromString(outcome.response)
        logits = tensor_from_raw(reply.outputs[0].datatype, tuple(reply.outputs[0].shape), reply.raw_output_contents[0])
        assert logits.shape == (1, 10) and np.isfinite(logits).all()


@pytest.mark.parametrize(("case", "role"), _case_params())
def test_malformed_request_gets_its_precise_status(case, role, cluster, targets) -> None:
    target = targets[role]
    with open_channel(cluster.addresses[role]) as channel:
        for seed in SEEDS:
            call = case.make(target, random.Random(seed))
            outcome = send(channel, call, DEADLINE_S)
            assert outcome.code in call.expected, f"{case.name} (seed {seed}) -> {outcome.code.name}: {outcome.details}"
            assert outcome.details, f"{case.name} (seed {seed}) -> {outcome.code.name} without a message"
            assert outcome.seconds < DEADLINE_S / 2
        # The same port serves the OIP front door and the role's coinfer.v1 service.
        _check_still_serving(channel, target, random.Random(99))


def test_the_catalogue_covers_every_method_of_both_daemons() -> None:
    """A method added to a service must get malformed cases too (health/reflection are gRPC's own)."""
    from coinfer.protos import coinfer_v1_pb2 as v1

    served = {("oip", "ModelInfer"), ("oip", "ModelMetadata"), ("oip", "ModelReady")}
    for service, name in (("coordinator", "Coordinator"), ("edge", "Edge")):
        served |= {(service, m.name) for m in v1.DESCRIPTOR.services_by_name[name].methods}
    # ListDevices has one boolean field: no malformed form exists; the live/ready RPCs take none.
    without_malformed_form = {("coordinator", "ListDevices")}
    covered = {(case.service, case.path.rsplit("/", 1)[1]) for case in (c.make(_dummy_target(), random.Random(0)) for c in CASES)}
    assert served - without_malformed_form <= covered, sorted(served - without_malformed_form - covered)


def _dummy_target() -> FuzzTarget:
    return FuzzTarget(
        split_model="m", devit_model="d", image_shape=(1, 8, 8), offload_points={0: (1, 8, 8), 2: (8, 4, 4)}, local_point=5,
        bundle="b", part="p", part_size_bytes=10, submodel=("d", "b", "device-0"),
    )


def test_an_undecodable_message_is_answered_by_grpc_and_the_daemon_lives_on(cluster, targets) -> None:
    """gRPC itself refuses bytes that are not a message (before coinfer sees them); nothing breaks."""
    from coinfer.bench.malformed import CASES_BY_NAME

    with open_channel(cluster.coordinator.address) as channel:
        call = CASES_BY_NAME["undecodable"].make(targets["coordinator"], random.Random(0))
        outcome = send(channel, call, DEADLINE_S)
        assert outcome.code == grpc.StatusCode.INTERNAL and "deserializ" in outcome.details.lower()
        _check_still_serving(channel, targets["coordinator"], random.Random(1))


def test_an_empty_batch_gets_the_same_answer_from_every_front_door(cluster) -> None:
    from coinfer.serving.client import InferenceClient

    empty = np.zeros((0, 1, 8, 8), np.uint8)
    with InferenceClient(cluster.coordinator.address, timeout_s=DEADLINE_S) as client:
        assert client.infer(SPLIT_MODEL, {"image": empty}).outputs["logits"].shape == (0, 10)
    with InferenceClient(cluster.edges[0].address, timeout_s=DEADLINE_S) as client:
        assert client.infer(SPLIT_MODEL, {"image": empty}).outputs["logits"].shape == (0, 10)
