"""Locked doors: mutual TLS and a bearer token on every method of both daemons, and no unpickling anywhere.

A coordinator and an edge run with mutual TLS (certificates from `coinfer certs init`) and a
token. Every method of every service they serve (Open Inference Protocol, coinfer.v1
Coordinator and Edge, reflection) is called by a client without a certificate, with a
certificate from another CA, without the token, and with wrong tokens; only health checks may
answer without the token. Then every loader coinfer has runs with pickle, torch.load and
numpy's pickle path wired to fail.
"""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest

from coinfer.protos import coinfer_v1_pb2 as v1
from coinfer.protos import inference_pb2 as pb
from coinfer.serving.security import ClientSecurity, ServerSecurity, open_channel

from reliability_helpers import DEVIT_MODEL, SPLIT_MODEL, wait_for_log, wait_whole

TOKEN = "correct-horse-battery-staple"
DEADLINE_S = 20.0
HEALTH = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def _methods(role: str) -> list[tuple[str, bool, bool]]:
    """(path, request-streaming, response-streaming) of every method ``role`` serves, plus reflection."""
    out = []
    for descriptor, service in ((pb.DESCRIPTOR, "GRPCInferenceService"), (v1.DESCRIPTOR, "Coordinator" if role == "coordinator" else "Edge")):
        s = descriptor.services_by_name[service]
        out += [(f"/{s.full_name}/{m.name}", m.client_streaming, m.server_streaming) for m in s.methods]
    return out + [(REFLECTION, True, True)]


def _call(channel: grpc.Channel, path: str, client_streaming: bool, server_streaming: bool, metadata=None) -> grpc.StatusCode:
    """Call ``path`` with an empty message; the status code it ends with."""
    identity = lambda b: b  # noqa: E731
    try:
        if client_streaming and server_streaming:
            call = channel.stream_stream(path, request_serializer=identity, response_deserializer=identity)
            list(call(iter([b""]), timeout=DEADLINE_S, metadata=metadata))
        elif server_streaming:
            list(channel.unary_stream(path, request_serializer=identity, response_deserializer=identity)(b"", timeout=DEADLINE_S))
        else:
            channel.unary_unary(path, request_serializer=identity, response_deserializer=identity)(b"", timeout=DEADLINE_S)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    from coinfer.serving.certs import init_certs

    return init_certs(tmp_path_factory.mktemp("certs")), init_certs(tmp_path_factory.mktemp("other-ca"))


@pytest.fixture(scope="module")
def locked(certs, split_bundle, devit_bundle, tmp_path_factory):
    """A coordinator and one edge, both with mutual TLS and the token; {role: address}."""
    from coinfer.edge.daemon import EdgeConfig
    from coinfer.edge.serve import start_edge
    from coinfer.serving.server import ServerOptions
    from coinfer.server.coordinator import CoordinatorConfig
    from coinfer.server.serve import start_coordinator

    ours, _ = certs
    security = ServerSecurity(ours.server_cert, ours.server_key, client_ca_file=ours.ca_cert, token=TOKEN)
    peer = ClientSecurity(ca_file=ours.ca_cert, cert_file=ours.server_cert, key_file=ours.server_key, token=TOKEN)
    options = ServerOptions(listen="localhost:0", grace_s=0.2, security=security)
    coordinator = start_coordinator([devit_bundle.path, split_bundle.path], options, CoordinatorConfig(heartbeat_interval_s=0.2), edge_security=peer)
    edge = None
    try:
        edge = start_edge(EdgeConfig(name="locked-0", coordinator=coordinator.address, address="", cache_dir=tmp_path_factory.mktemp("locked"), security=peer), options)
        user = ClientSecurity(ca_file=ours.ca_cert, cert_file=ours.client_cert, key_file=ours.client_key, token=TOKEN)
        from coinfer.serving.client import InferenceClient

        for address in (coordinator.address, edge.address):
            with InferenceClient(address, user, timeout_s=DEADLINE_S) as client:
                client.wait_until_ready(SPLIT_MODEL, timeout_s=60)
        yield {"coordinator": coordinator.address, "edge": edge.address}
    finally:
        if edge is not None:
            edge.stop()
        coordinator.stop()


def _clients(certs) -> dict[str, ClientSecurity]:
    ours, other = certs
    mine = dict(ca_file=ours.ca_cert, cert_file=ours.client_cert, key_file=ours.client_key)
    return {
        "good": ClientSecurity(**mine, token=TOKEN),
        "no-certificate": ClientSecurity(ca_file=ours.ca_cert, token=TOKEN),
        "other-ca-certificate": ClientSecurity(ca_file=ours.ca_cert, cert_file=other.client_cert, key_file=other.client_key, token=TOKEN),
        "untrusted-server": ClientSecurity(ca_file=other.ca_cert, cert_file=ours.client_cert, key_file=ours.client_key, token=TOKEN),
        "no-token": ClientSecurity(**mine),
        "wrong-token": ClientSecurity(**mine, token=TOKEN[:-1] + "X"),
        "token-prefix": ClientSecurity(**mine, token=TOKEN[:8]),
        "token-longer": ClientSecurity(**mine, token=TOKEN + " "),
    }


@pytest.mark.parametrize("role", ["coordinator", "edge"])
@pytest.mark.parametrize("who", ["no-certificate", "other-ca-certificate", "untrusted-server"])
def test_without_a_certificate_of_our_ca_no_method_answers(locked, certs, role, who) -> None:
    with open_channel(locked[role], _clients(certs)[who]) as channel:
        for path, client_streaming, server_streaming in [*_methods(role), (HEALTH, False, False)]:
            # The TLS handshake fails before any method is reached.
            assert _call(channel, path, client_streaming, server_streaming) == grpc.StatusCode.UNAVAILABLE, (who, path)


@pytest.mark.parametrize("role", ["coordinator", "edge"])
@pytest.mark.parametrize("who", ["no-token", "wrong-token", "token-prefix", "token-longer"])
def test_without_the_right_token_every_method_but_health_is_unauthenticated(locked, certs, role, who) -> None:
    with open_channel(locked[role], _clients(certs)[who]) as channel:
        for path, client_streaming, server_streaming in _methods(role):
            assert _call(channel, path, client_streaming, server_streaming) == grpc.StatusCode.UNAUTHENTICATED, (who, path)
        # Orchestrators probe health without the token.
        assert _call(channel, HEALTH, False, False) == grpc.StatusCode.OK


@pytest.mark.parametrize("role", ["coordinator", "edge"])
def test_with_certificate_and_token_the_same_calls_get_through(locked, certs, role) -> None:
    with open_channel(locked[role], _clients(certs)["good"]) as channel:
        assert _call(channel, "/inference.GRPCInferenceService/ServerLive", False, False) == grpc.StatusCode.OK
        # Streaming-request calls carry the token only when the caller adds it (see the xfail test below).
        assert _call(channel, REFLECTION, True, True, metadata=(("authorization", f"Bearer {TOKEN}"),)) == grpc.StatusCode.OK
        # An empty ModelInfer gets past the doors and is refused for what it is.
        assert _call(channel, "/inference.GRPCInferenceService/ModelInfer", False, False) == grpc.StatusCode.NOT_FOUND


def test_a_token_channel_sends_the_token_on_streaming_request_calls_too(locked, certs) -> None:
    with open_channel(locked["coordinator"], _clients(certs)["good"]) as channel:
        assert _call(channel, REFLECTION, True, True) == grpc.StatusCode.OK


def test_an_edge_that_trusts_another_ca_never_registers(certs, split_bundle, tmp_path, caplog) -> None:
    """The edge side of the same door: a coordinator with a certificate the edge does not trust is never used."""
    from coinfer.edge.daemon import EdgeConfig
    from coinfer.edge.serve import start_edge
    from coinfer.serving.server import ServerOptions
    from coinfer.server.serve import start_coordinator

    ours, other = certs
    caplog.set_level(logging.WARNING, logger="coinfer.edge.daemon")
    options = ServerOptions(listen="localhost:0", grace_s=0.2, security=ServerSecurity(ours.server_cert, ours.server_key, client_ca_file=ours.ca_cert))
    coordinator = start_coordinator(split_bundle.path, options)
    wrong_trust = ClientSecurity(ca_file=other.ca_cert, cert_file=other.server_cert, key_file=other.server_key)
    edge = start_edge(EdgeConfig(name="stranger", coordinator=coordinator.address, address="", cache_dir=tmp_path / "cache", security=wrong_trust),
                      ServerOptions(listen="127.0.0.1:0", grace_s=0.2))
    try:
        # The edge tried twice (its control loop logs each failed attempt) and got nowhere.
        wait_for_log(caplog, "coinfer.edge.daemon", "Register with the coordinator", count=2)
        assert coordinator.coordinator.devices(include_stale=True) == [] and not edge.daemon.is_ready()
        assert not any((tmp_path / "cache").rglob("*.safetensors")), "a part reached an edge over an untrusted connection"
    finally:
        edge.stop()
        coordinator.stop()


# No unpickling on any load path -----------------------------------------------------------------


@pytest.fixture
def no_unpickling(monkeypatch):
    """Make every unpickling entry point raise, and record who called it."""
    import _pickle

    import torch

    calls: list[str] = []

    def refuse(name: str):
        def fn(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called on a load path")

        return fn

    for module, names in ((pickle, ("load", "loads", "Unpickler")), (_pickle, ("load", "loads", "Unpickler")),
                          (torch, ("load",)), (torch.serialization, ("load",))):
        for name in names:
            monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}"))
    real_np_load = np.load

    def np_load(*args, allow_pickle=False, **kwargs):
        if allow_pickle:
            calls.append("numpy.load(allow_pickle=True)")
            raise AssertionError("numpy.load with allow_pickle=True on a load path")
        return real_np_load(*args, allow_pickle=False, **kwargs)

    monkeypatch.setattr(np, "load", np_load)
    return calls


def _policy_files(folder: Path) -> list[Path]:
    """A MAHPPO and an SB3 policy for the paper scenario, saved the way training saves them."""
    from stable_baselines3.common.policies import ActorCriticPolicy
    from torch import nn

    from coinfer.rl.mahppo_policy import MahppoPolicy
    from coinfer.rl.networks import HybridActor
    from coinfer.rl.sb3_ppo import Sb3Policy, _spaces
    from coinfer.rl.scenario import load_scenario

    scenario = load_scenario("mahppo-paper-resnet18")
    actor = HybridActor(scenario.num_devices, 4, scenario.num_points, scenario.num_subchannels, hidden=(8,))
    mahppo = MahppoPolicy(actor, scenario).save(folder / "mahppo")
    observation_space, action_space = _spaces(scenario, 3)
    sb3 = ActorCriticPolicy(observation_space, action_space, lr_schedule=lambda _: 0.0, net_arch=dict(pi=[8], vf=[8]), activation_fn=nn.ReLU)
    saved = Sb3Policy(sb3, scenario, 3).save(folder / "sb3")
    spec = saved.read_text().replace('"actor_hidden": []', '"actor_hidden": [8]').replace('"critic_hidden": []', '"critic_hidden": [8]')
    saved.write_text(spec)
    return [mahppo, saved]


def test_no_loader_unpickles(no_unpickling, split_bundle, devit_bundle, tmp_path) -> None:
    from PIL import Image

    from coinfer.core.bundle import load_bundle
    from coinfer.core.codec import decode, encode, from_bytes, to_bytes
    from coinfer.core.data import FASHION_MNIST_DIRS, load_dataset
    from coinfer.core.profile import load_profile
    from coinfer.core.split_point import load_samples
    from coinfer.edge.part_cache import PartCache
    from coinfer.rl.policy import load_policy
    from coinfer.rl.scenario import load_scenario
    from coinfer.server.catalog import ModelCatalog

    # Bundles, every part rebuilt; the coordinator's catalogue of both kinds.
    for bundle_path in (split_bundle.path, devit_bundle.path):
        bundle = load_bundle(bundle_path)
        for spec in bundle.manifest.parts:
            if spec.role == "samples":
                load_samples(bundle)
            else:
                bundle.load_module(spec.name)
    ModelCatalog.load([split_bundle.path, devit_bundle.path])
    # The edge's part cache: download from the bundle's bytes, verify, open.
    cache = PartCache(tmp_path / "cache")
    spec = split_bundle.part("point2.head")
    data = (split_bundle.path / spec.file).read_bytes()
    chunk = type("Chunk", (), {"offset": 0, "data": data, "total_size_bytes": len(data), "sha256": spec.sha256})
    cache.ensure(split_bundle.name, spec, lambda b, p, o: [chunk])
    cache.open_bundle(split_bundle.name, [spec]).load_module(spec.name)
    # Profiles, scenarios and policies, built in and from files.
    profile = load_profile("jetson-nano-vgg11")
    profile.save(tmp_path / "profile.json")
    load_profile(tmp_path / "profile.json")
    load_scenario("heterogeneous")
    from importlib import resources

    shutil.copy(resources.files("coinfer.rl") / "scenarios" / "mahppo-paper-resnet18.toml", tmp_path / "s.toml")
    load_scenario(tmp_path / "s.toml")
    for policy in _policy_files(tmp_path):
        load_policy(policy, "mahppo-paper-resnet18").act(np.zeros(20, np.float32))
    # Datasets of every kind.
    load_dataset("digits")
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 8, 8), np.uint8), y=np.arange(20) % 2)
    load_dataset("npz", tmp_path / "d.npz")
    for label in ("a", "b"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), i).save(tmp_path / "imgs" / label / f"{i}.png")
    load_dataset("imagefolder", tmp_path / "imgs")
    if any(d.is_dir() for d in FASHION_MNIST_DIRS):
        load_dataset("fashion-mnist")
    # The wire codec.
    decode(from_bytes(to_bytes(encode(np.ones((2, 3), np.float32), bits=4, compress=True))))
    assert no_unpickling == []


def test_the_running_daemons_never_unpickle(no_unpickling, cluster, images) -> None:
    """Deploy and serve with unpickling wired to fail: a fresh edge downloads, loads and answers."""
    import tempfile

    from coinfer.edge.daemon import EdgeConfig
    from coinfer.edge.serve import start_edge
    from coinfer.serving.server import ServerOptions

    with tempfile.TemporaryDirectory() as cache:
        edge = start_edge(EdgeConfig(name="pickle-free", coordinator=cluster.coordinator.address, address="", cache_dir=Path(cache)),
                          ServerOptions(listen="127.0.0.1:0", grace_s=0.2))
        try:
            wait_whole(edge.address)
            from coinfer.serving.client import InferenceClient

            with InferenceClient(edge.address, timeout_s=DEADLINE_S) as client:
                for model in (SPLIT_MODEL, DEVIT_MODEL):
                    assert client.infer(model, {"image": images}).outputs["logits"].shape == (len(images), 10)
        finally:
            edge.stop()
    assert no_unpickling == []
