"""Deploying parts to an edge: malformed chunk streams, changed bytes, hostile names.

The edge's part cache must never hold a file whose bytes differ from the sha256 the
assignment promised: whatever a stream does (chunks out of order, a wrong hash or size on a
chunk, flipped, missing or extra bytes, a stream cut short), the download is refused and an
honest retry still ends with the right file. End to end, a part changed on the coordinator's
disk after it was verified never reaches a device, and the device loads it once it is whole
again.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinfer.core.bundle import PartSpec
from coinfer.core.errors import CoinferError, IntegrityError, InvalidInput
from coinfer.edge.part_cache import PartCache

from reliability_helpers import wait_for_log

DEADLINE_S = 20.0
CHUNK = 4096


@dataclass
class Chunk:
    offset: int
    data: bytes
    total_size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Part:
    spec: PartSpec
    content: bytes = field(repr=False)  # tens of KiB: keep it out of hypothesis' reports

    def __iter__(self):
        return iter((self.spec, self.content))


@pytest.fixture(scope="module")
def part(devit_bundle) -> Part:
    """A DeViT sub-model part (tens of KiB: several chunks) and its bytes."""
    spec = devit_bundle.part("device-0")
    return Part(spec, (devit_bundle.path / spec.file).read_bytes())


def _honest(spec: PartSpec, data: bytes):
    def fetch(bundle: str, name: str, offset: int):
        return [Chunk(o, data[o : o + CHUNK], len(data), spec.sha256) for o in range(offset, len(data), CHUNK)]

    return fetch


STREAM_DAMAGE = ("flip", "drop", "duplicate", "swap", "offset", "hash", "size", "extra", "cut", "overrun", "exception")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_malformed_chunk_stream_never_leaves_a_wrong_file(data, part, tmp_path_factory) -> None:
    spec, content = part
    chunks = _honest(spec, content)("b", spec.name, 0)
    damage = data.draw(st.lists(st.sampled_from(STREAM_DAMAGE), min_size=1, max_size=3))
    for kind in damage:
        if not chunks or chunks[-1] is None:
            break
        i = data.draw(st.integers(0, len(chunks) - 1))
        c = chunks[i]
        if kind == "flip" and c.data:
            j = data.draw(st.integers(0, len(c.data) - 1))
            chunks[i] = replace(c, data=c.data[:j] + bytes([c.data[j] ^ data.draw(st.integers(1, 255))]) + c.data[j + 1 :])
        elif kind == "drop":
            del chunks[i]
        elif kind == "duplicate":
            chunks.insert(i, c)
        elif kind == "swap" and i + 1 < len(chunks):
            chunks[i], chunks[i + 1] = chunks[i + 1], chunks[i]
        elif kind == "offset":
            chunks[i] = replace(c, offset=c.offset + data.draw(st.sampled_from([-1, 1, CHUNK, -(2**40)])))
        elif kind == "hash":
            chunks[i] = replace(c, sha256=hashlib.sha256(b"other").hexdigest())
        elif kind == "size":
            chunks[i] = replace(c, total_size_bytes=c.total_size_bytes + data.draw(st.sampled_from([-1, 1, 2**40])))
        elif kind == "extra":
            chunks.append(Chunk(len(content), data.draw(st.binary(min_size=1, max_size=64)), len(content), spec.sha256))
        elif kind == "cut":
            del chunks[i:]
        elif kind == "overrun":
            chunks[-1] = replace(chunks[-1], data=chunks[-1].data + b"\0")
        elif kind == "exception":
            chunks = chunks[:i] + [None]  # the stream breaks off with an error
    cache = PartCache(tmp_path_factory.mktemp("cache"))

    def fetch(bundle, name, offset):
        for c in chunks:
            if c is None:
                raise IntegrityError("stream broke off")
            yield c

    final = cache.path_of("b", spec)
    try:
        cache.ensure("b", spec, fetch)
        assert final.read_bytes() == content, "a damaged stream was accepted"
    except CoinferError:
        assert not final.exists(), "a refused download left a file in place"
        partial = final.with_name(final.name + ".partial")
        assert not partial.exists() or partial.stat().st_size <= spec.size_bytes
    # Honest retries converge: at most one more refusal (a damaged partial file resumed), then the right file.
    for attempt in range(2):
        try:
            cache.ensure("b", spec, _honest(spec, content))
            break
        except IntegrityError:
            assert attempt == 0
    assert final.read_bytes() == content and cache.has("b", spec)


def test_a_changed_cached_part_is_downloaded_again_before_it_is_loaded(part, tmp_path) -> None:
    spec, content = part
    cache = PartCache(tmp_path)
    path = cache.ensure("b", spec, _honest(spec, content))
    path.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
    assert not cache.has("b", spec)
    calls = []

    def counting(bundle, name, offset):
        calls.append(offset)
        return _honest(spec, content)(bundle, name, offset)

    cache.ensure("b", spec, counting)
    assert calls and path.read_bytes() == content
    # Changed between the check and the load: the bundle loader checks the hash again.
    path.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
    with pytest.raises(IntegrityError):
        cache.open_bundle("b", [spec])


@pytest.mark.parametrize(("bundle", "name"), [("..", "device-0"), ("b", "../escape"), ("b", "/etc/x"), ("b/c", "p"), ("", "p"), ("b", "..")])
def test_hostile_bundle_and_part_names_from_a_coordinator_are_refused(part, tmp_path, bundle, name) -> None:
    spec, content = part
    root = tmp_path / "cache"
    cache = PartCache(root)
    hostile = replace(spec, name=name, file=f"{name}.safetensors" if name != ".." else "..")
    with pytest.raises(InvalidInput, match="not a plain name"):
        cache.ensure(bundle, hostile, _honest(spec, content))
    outside = [p for p in tmp_path.rglob("*") if root not in p.parents and p != root]
    assert outside == [], f"written outside the cache: {outside}"


def test_a_part_changed_on_the_coordinators_disk_never_reaches_a_device(devit_bundle, tmp_path, caplog) -> None:
    from coinfer.edge.daemon import EdgeConfig
    from coinfer.edge.serve import start_edge
    from coinfer.serving.server import ServerOptions
    from coinfer.server.coordinator import CoordinatorConfig
    from coinfer.server.serve import start_coordinator

    copy = tmp_path / devit_bundle.path.name
    shutil.copytree(devit_bundle.path, copy)
    options = ServerOptions(listen="127.0.0.1:0", grace_s=0.2)
    coordinator = start_coordinator(copy, options, CoordinatorConfig(heartbeat_interval_s=0.2))
    part_file = copy / devit_bundle.part("device-0").file
    good = part_file.read_bytes()
    part_file.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))  # after the coordinator verified it
    cache = tmp_path / "edge-cache"
    caplog.set_level(logging.WARNING, logger="coinfer.edge.daemon")
    edge = start_edge(EdgeConfig(name="victim", coordinator=coordinator.address, address="", cache_dir=cache, retry_max_s=0.5), options)
    try:
        # The edge asked twice for the part (its loader logs each refusal) and loaded nothing.
        wait_for_log(caplog, "coinfer.edge.daemon", f"FetchPart {devit_bundle.name}/device-0", count=2)
        assert not edge.daemon.is_ready(), "the edge loaded an assignment with a changed part"
        assert not list(cache.rglob("device-0.safetensors")), "the changed part reached the edge's cache"
        part_file.write_bytes(good)  # whole again: the edge's retries now succeed
        deadline = time.monotonic() + DEADLINE_S
        while not edge.daemon.is_ready():
            assert time.monotonic() < deadline, "the edge never loaded the part once it was whole"
            time.sleep(0.1)
        assert (cache / devit_bundle.name / "device-0.safetensors").read_bytes() == good
    finally:
        edge.stop()
        coordinator.stop()

