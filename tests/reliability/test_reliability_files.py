"""Every file coinfer reads, damaged on purpose: bundles, scenarios, profiles, policy files, datasets.

A damaged file must be refused with a coinfer error (InvalidInput, NotFound or IntegrityError)
that names the file; anything else (a bare ValueError, TypeError, a library's own error) reaches
the user as a traceback. Property tests mutate valid documents at random (delete a field,
replace any value by any JSON value, flip or cut bytes); each damage class that escapes as
another exception today has its own strict-xfail test naming the bug, and the property tests
leave that class out (each exclusion says which test covers it) until the fix lands.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from coinfer.core.bundle import MANIFEST, load_bundle
from coinfer.core.errors import CoinferError, IntegrityError, InvalidInput, NotFound

FILES = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _get(doc, path):
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw, document, skip=lambda path: False):
    """``document`` with one to three random deletions or replacements (paths for which ``skip`` is true are left alone)."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p and not skip(p)]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _get(doc, path[:-1])
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return doc


def _refused(fn) -> CoinferError | None:
    """None when ``fn`` succeeds; the coinfer error when it refuses; any other exception fails the test."""
    try:
        fn()
    except CoinferError as exc:
        assert str(exc), "a refusal must say why"
        return exc
    return None


# Bundles --------------------------------------------------------------------------------------


@pytest.fixture
def bundle_copy(devit_bundle, tmp_path) -> Path:
    """A writable copy of the (small) DeViT test bundle."""
    path = tmp_path / "copy"
    shutil.copytree(devit_bundle.path, path)
    return path


def _manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def _write_manifest(path: Path, data: object) -> None:
    (path / MANIFEST).write_text(json.dumps(data))


@given(data=st.data())
@FILES
def test_a_part_with_changed_or_missing_bytes_is_refused_on_load(data, devit_bundle, tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("damaged") / "b"
    shutil.copytree(devit_bundle.path, path)
    spec = data.draw(st.sampled_from(devit_bundle.manifest.parts))
    file = path / spec.file
    content = bytearray(file.read_bytes())
    damage = data.draw(st.sampled_from(["flip", "truncate", "extend", "empty"]))
    if damage == "flip":
        i = data.draw(st.integers(0, len(content) - 1))
        content[i] ^= data.draw(st.integers(1, 255))
    elif damage == "truncate":
        del content[data.draw(st.integers(0, len(content) - 1)) :]
    elif damage == "extend":
        content += data.draw(st.binary(min_size=1, max_size=32))
    else:
        content = bytearray()
    file.write_bytes(bytes(content))
    with pytest.raises(IntegrityError, match=spec.file):
        load_bundle(path)
    # Opened without verification, the part is still checked when its bytes are read.
    unverified = load_bundle(path, verify=False)
    with pytest.raises(IntegrityError, match="sha256"):
        unverified.load_state(spec.name)


@pytest.mark.parametrize("field", ["format_version", "name", "kind", "parts"])
def test_a_manifest_without_a_top_level_field_is_refused_naming_it(bundle_copy, field) -> None:
    data = _manifest(bundle_copy)
    del data[field]
    _write_manifest(bundle_copy, data)
    with pytest.raises(InvalidInput, match=f"missing field '{field}'"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("field", ["name", "file", "sha256", "size_bytes", "role"])
def test_a_part_entry_without_a_field_is_refused_naming_it(bundle_copy, field) -> None:
    data = _manifest(bundle_copy)
    del data["parts"][1][field]
    _write_manifest(bundle_copy, data)
    with pytest.raises(InvalidInput, match=rf"parts\[1\] is missing field '{field}'"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd", "sub/part.safetensors", "..", ".", "", "a\\b", "x\x00y"])
def test_a_part_path_that_leaves_the_bundle_is_refused_before_it_is_read(bundle_copy, name) -> None:
    # A file with the right bytes waits outside: it must not be read, let alone loaded.
    data = _manifest(bundle_copy)
    part = data["parts"][0]
    shutil.copy(bundle_copy / part["file"], bundle_copy.parent / "outside.safetensors")
    part["file"] = name
    _write_manifest(bundle_copy, data)
    with pytest.raises(InvalidInput, match="not a plain file name inside the bundle"):
        load_bundle(bundle_copy)


def test_a_part_file_that_is_a_link_is_refused(bundle_copy) -> None:
    data = _manifest(bundle_copy)
    file = bundle_copy / data["parts"][0]["file"]
    outside = bundle_copy.parent / "outside.safetensors"
    shutil.move(file, outside)
    file.symlink_to(outside)  # same bytes, same hash: only the link gives it away
    with pytest.raises(InvalidInput, match="not links"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("text", ["", "{", "[]", "null", "\xff\xfe"])
def test_a_manifest_that_is_not_a_json_object_is_refused(bundle_copy, text) -> None:
    (bundle_copy / MANIFEST).write_bytes(text.encode("latin-1"))
    with pytest.raises(InvalidInput, match=MANIFEST):
        load_bundle(bundle_copy)


@FILES
@given(data=st.data())
def test_random_manifest_damage_is_refused_with_a_coinfer_error(data, split_bundle, tmp_path_factory) -> None:
    from coinfer.server.catalog import ModelCatalog

    path = tmp_path_factory.mktemp("manifest") / "b"
    path.mkdir()
    for spec in split_bundle.manifest.parts:
        os.link(split_bundle.path / spec.file, path / spec.file)  # the weights, unchanged (hard links: no copy)
    _write_manifest(path, data.draw(mutated(_manifest(split_bundle.path))))
    _refused(lambda: ModelCatalog.load([path]))


@pytest.mark.parametrize("name", [["a"], {"a": 1}])
def test_a_part_name_that_is_not_a_string_is_refused(bundle_copy, name) -> None:
    data = _manifest(bundle_copy)
    data["parts"][0]["name"] = name
    _write_manifest(bundle_copy, data)
    assert _refused(lambda: load_bundle(bundle_copy)) is not None


@pytest.mark.parametrize("segment", [5, [0], [0, 1, 2], {"a": 1}])
def test_a_part_config_with_a_malformed_segment_is_refused(split_bundle, tmp_path, segment) -> None:
    path = tmp_path / "b"
    shutil.copytree(split_bundle.path, path)
    data = _manifest(path)
    head = next(p for p in data["parts"] if p["name"] == "point2.head")
    head["config"]["segment"] = segment
    _write_manifest(path, data)
    assert _refused(lambda: load_bundle(path).load_module("point2.head")) is not None


def test_a_segment_on_an_autoencoder_part_is_refused(split_bundle, tmp_path) -> None:
    path = tmp_path / "b"
    shutil.copytree(split_bundle.path, path)
    data = _manifest(path)
    next(p for p in data["parts"] if p["name"] == "point2.encoder")["config"]["segment"] = [0, 2]
    _write_manifest(path, data)
    with pytest.raises(InvalidInput, match="point2.encoder"):
        load_bundle(path).load_module("point2.encoder")


@pytest.mark.parametrize("points", [[1, 2], ["input"], {"0": {}}])
def test_split_metadata_with_points_that_are_not_objects_is_refused(split_bundle, tmp_path, points) -> None:
    from coinfer.server.catalog import ModelCatalog

    path = tmp_path / "b"
    shutil.copytree(split_bundle.path, path)
    data = _manifest(path)
    data["metadata"]["split"]["points"] = points
    _write_manifest(path, data)
    error = _refused(lambda: ModelCatalog.load([path]))
    assert isinstance(error, InvalidInput) and "metadata.split.points" in str(error)


# Scenarios ------------------------------------------------------------------------------------


def _scenario_document() -> dict:
    import tomllib
    from importlib import resources

    return tomllib.loads((resources.files("coinfer.rl") / "scenarios" / "mahppo-paper-resnet18.toml").read_text())


@FILES
@given(data=st.data())
def test_random_scenario_damage_is_refused_with_a_coinfer_error(data) -> None:
    from coinfer.rl.scenario import scenario_from_dict

    damaged = data.draw(mutated(_scenario_document()))
    _refused(lambda: scenario_from_dict(damaged, "fuzzed.toml"))


@FILES
@given(data=st.data())
def test_random_scenario_file_bytes_are_refused_with_a_coinfer_error(data, tmp_path_factory) -> None:
    from importlib import resources

    from coinfer.rl.scenario import load_scenario

    text = bytearray((resources.files("coinfer.rl") / "scenarios" / "mahppo-paper-resnet18.toml").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text) - 1))
        text[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del text[data.draw(st.integers(0, len(text))) :]
    path = tmp_path_factory.mktemp("scenario") / "fuzzed.toml"
    path.write_bytes(bytes(text))
    error = _refused(lambda: load_scenario(path))
    assert error is None or str(path) in str(error)


def test_a_scenario_file_that_is_not_utf8_is_refused(tmp_path) -> None:
    from coinfer.rl.scenario import load_scenario

    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    error = _refused(lambda: load_scenario(path))
    assert isinstance(error, InvalidInput) and str(path) in str(error)


def test_a_scenario_with_an_absurd_device_count_is_refused() -> None:
    from coinfer.rl.scenario import scenario_from_dict

    document = _scenario_document()
    document["devices"][0]["count"] = 2**40
    error = _refused(lambda: scenario_from_dict(document, "huge.toml"))
    assert error is not None and "huge.toml" in str(error) and "devices[0].count" in str(error)


# Profiles -------------------------------------------------------------------------------------


def _profile_document() -> dict:
    from coinfer.core.profile import load_profile

    return json.loads(json.dumps(load_profile("jetson-nano-resnet18").to_dict()))


@FILES
@given(data=st.data())
def test_random_profile_damage_is_refused_with_a_coinfer_error(data, tmp_path_factory) -> None:
    from coinfer.core.profile import load_profile

    path = tmp_path_factory.mktemp("profile") / "fuzzed.json"
    path.write_text(json.dumps(data.draw(mutated(_profile_document()))))
    error = _refused(lambda: load_profile(path))
    assert error is None or str(path) in str(error)


@pytest.mark.parametrize(("key", "value"), [("raw_input_bytes", "abc"), ("raw_input_bytes", None), ("extra", [1, 2]), ("head_macs", "x")])
def test_profile_fields_read_without_checks_are_refused(key, value) -> None:
    from coinfer.core.profile import profile_from_dict

    document = _profile_document()
    (document["points"][1] if key == "head_macs" else document)[key] = value
    assert _refused(lambda: profile_from_dict(document, "bad.json")) is not None


# Policy files ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory) -> Path:
    """A small untrained MAHPPO policy for the paper scenario, saved as JSON + safetensors."""
    from coinfer.rl.mahppo_policy import MahppoPolicy
    from coinfer.rl.networks import HybridActor
    from coinfer.rl.scenario import load_scenario

    scenario = load_scenario("mahppo-paper-resnet18")
    actor = HybridActor(scenario.num_devices, 4, scenario.num_points, scenario.num_subchannels, hidden=(8,))
    return MahppoPolicy(actor, scenario).save(tmp_path_factory.mktemp("policy") / "policy")


@FILES
@given(data=st.data())
def test_random_policy_spec_damage_is_refused_with_a_coinfer_error(data, policy_file, tmp_path_factory) -> None:
    from coinfer.rl.policy import load_policy

    folder = tmp_path_factory.mktemp("policy-fuzz")
    shutil.copy(policy_file.with_suffix(".safetensors"), folder / "policy.safetensors")
    (folder / "policy.json").write_text(json.dumps(data.draw(mutated(json.loads(policy_file.read_text())))))
    _refused(lambda: load_policy(folder / "policy.json", "mahppo-paper-resnet18"))


@pytest.mark.parametrize(("key", "value"), [("feature_names", 4), ("share_actor", "yes"), ("power_low_w", [0.1, "x"]),
                                          ("actor_hidden", [2**40]), ("max_devices", 2**40), ("extra", [])])
def test_policy_spec_fields_of_the_wrong_type_are_refused(policy_file, tmp_path, key, value) -> None:
    from coinfer.rl.policy_files import read_policy_spec

    document = json.loads(policy_file.read_text())
    document[key] = value
    (tmp_path / "policy.json").write_text(json.dumps(document))
    error = _refused(lambda: read_policy_spec(tmp_path / "policy.json"))
    assert isinstance(error, InvalidInput) and f"'{key}'" in str(error) and str(tmp_path / "policy.json") in str(error)


def test_a_damaged_policy_weights_file_is_refused(policy_file, tmp_path) -> None:
    from coinfer.rl.policy import load_policy

    shutil.copy(policy_file, tmp_path / "policy.json")
    (tmp_path / "policy.safetensors").write_bytes(policy_file.with_suffix(".safetensors").read_bytes()[:40])
    error = _refused(lambda: load_policy(tmp_path / "policy.json", "mahppo-paper-resnet18"))
    assert isinstance(error, IntegrityError) and str(tmp_path / "policy.safetensors") in str(error)


# Datasets -------------------------------------------------------------------------------------


def _npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


@FILES
@given(data=st.data())
def test_random_npz_arrays_are_refused_with_a_coinfer_error(data, tmp_path_factory) -> None:
    from coinfer.core.data import load_dataset

    dtype = data.draw(st.sampled_from([np.uint8, np.uint8, np.float32, np.int64, np.bool_]))
    shape = data.draw(st.lists(st.integers(0, 6), min_size=1, max_size=5))
    x = np.zeros(shape, dtype)
    y = np.asarray(data.draw(st.lists(st.one_of(st.integers(-3, 12), st.floats(allow_nan=True)), max_size=8)))
    assume(not (y.dtype.kind in "iu" and y.size and y.max() > 10**6))  # huge labels: test_an_npz_with_huge_labels... (xfail)
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    path.write_bytes(_npz_bytes(x, y))
    _refused(lambda: load_dataset("npz", path))


def test_an_npz_with_object_arrays_is_refused_without_unpickling(tmp_path) -> None:
    from coinfer.core.data import load_dataset

    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(InvalidInput, match="allow_pickle=False"):
        load_dataset("npz", path)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_npz_file_is_refused(tmp_path, damage) -> None:
    from coinfer.core.data import load_dataset

    content = bytearray(_npz_bytes(np.zeros((20, 8, 8), np.uint8), np.arange(20) % 2))
    if damage == "truncate":
        del content[len(content) // 2 :]
    else:
        content[len(content) // 3] ^= 0xFF
    (tmp_path / "d.npz").write_bytes(bytes(content))
    assert _refused(lambda: load_dataset("npz", tmp_path / "d.npz")) is not None


_HUGE_LABELS = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: fail fast instead of eating the machine
    from coinfer.core.data import load_dataset
    from coinfer.core.errors import CoinferError
    try:
        load_dataset("npz", sys.argv[1])
    except CoinferError as exc:
        print("REFUSED", exc)
    """
)


def test_an_npz_with_huge_labels_is_refused(tmp_path) -> None:
    path = tmp_path / "labels.npz"
    path.write_bytes(_npz_bytes(np.zeros((2, 8, 8), np.uint8), np.array([0, 2**31])))
    # One BLAS thread: its per-thread buffers must fit the child's 1 GiB address space on any machine.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _HUGE_LABELS, str(path)], capture_output=True, text=True, timeout=120, env=env)
    assert done.stdout.startswith("REFUSED"), done.stderr[-500:]


def _idx(dims: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


@FILES
@given(data=st.data())
def test_random_idx_files_are_refused_with_a_coinfer_error(data, tmp_path_factory) -> None:
    from coinfer.core.data import _read_idx

    dims = tuple(data.draw(st.lists(st.integers(0, 12), max_size=4)))
    content = bytearray(_idx(dims, bytes(int(np.prod(dims)) if dims else 1)))
    for _ in range(data.draw(st.integers(0, 3))):
        content[data.draw(st.integers(0, len(content) - 1))] ^= data.draw(st.integers(1, 255))
    if data.draw(st.booleans()):
        del content[data.draw(st.integers(0, len(content))) :]
    if len(content) >= 4 and len(content) >= 4 + 4 * content[3]:
        dims = struct.unpack(f">{content[3]}I", content[4 : 4 + 4 * content[3]])
        assume(math.prod(dims) < 2**63)  # products past int64: test_an_idx_file_whose_dimensions_overflow... (xfail)
    folder = tmp_path_factory.mktemp("idx")
    plain = folder / "train-images-idx3-ubyte"
    plain.write_bytes(bytes(content))
    _refused(lambda: _read_idx(plain))
    packed = folder / "train-images-idx3-ubyte.gz"
    packed.write_bytes(gzip.compress(bytes(content)))
    _refused(lambda: _read_idx(packed))


def test_an_idx_file_whose_dimensions_overflow_is_refused(tmp_path) -> None:
    from coinfer.core.data import _read_idx

    path = tmp_path / "overflow-idx"
    path.write_bytes(_idx((65536, 65536, 65536, 65536), b""))
    assert _refused(lambda: _read_idx(path)) is not None


def test_a_gzip_idx_file_with_a_corrupt_stream_is_refused(tmp_path) -> None:
    from coinfer.core.data import _read_idx

    good = gzip.compress(_idx((1000,), (bytes(range(256)) * 4)[:1000]))
    # The first damage inside the deflate stream that the gzip module reports as zlib.error.
    for i in range(10, len(good) - 8):
        content = bytearray(good)
        content[i] ^= 0x55
        try:
            gzip.decompress(bytes(content))
        except zlib.error:
            break
        except Exception:  # noqa: BLE001 - other damage (EOFError, BadGzipFile) is handled already
            continue
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(bytes(content))
    assert _refused(lambda: _read_idx(path)) is not None


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@FILES
@given(data=st.data())
def test_random_image_files_in_an_imagefolder_are_refused_with_a_coinfer_error(data, tmp_path_factory) -> None:
    from PIL import Image

    from coinfer.core.data import load_dataset

    root = tmp_path_factory.mktemp("images")
    for label in ("a", "b"):
        (root / label).mkdir()
        Image.new("L", (8, 8)).save(root / label / "0.png")
    content = bytearray(_png(8, 8) if data.draw(st.booleans()) else (root / "a" / "0.png").read_bytes())
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.integers(24, len(content) - 1))  # past the size fields: huge sizes have their own test
        content[i] ^= data.draw(st.integers(1, 255))
    if data.draw(st.booleans()):
        del content[data.draw(st.integers(0, len(content))) :]
    (root / "b" / "1.png").write_bytes(bytes(content))
    assume(_pil_error(root / "b" / "1.png") in (None, "caught"))  # PIL's other errors: test_an_image_pil_cannot_read... (xfail)
    _refused(lambda: load_dataset("imagefolder", root))


def _pil_error(path: Path) -> str | None:
    """How PIL fails on ``path``: None (it reads it), "caught" (an error type the loader handles), or the type's name."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
    except (UnidentifiedImageError, OSError, ValueError):
        return "caught"
    except Exception as exc:  # noqa: BLE001 - which type is the question
        return type(exc).__name__
    return None


@pytest.mark.parametrize("damage", ["huge-size", "chunk-length"])
def test_an_image_pil_cannot_read_is_refused(tmp_path, damage) -> None:
    from PIL import Image

    from coinfer.core.data import load_dataset

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / label / "0.png")
    content = bytearray(_png(30000, 30000) if damage == "huge-size" else _png(8, 8))
    if damage == "chunk-length":
        content[36] ^= 0x01  # the IDAT length: the next chunk type is read from the wrong place
    (tmp_path / "b" / "1.png").write_bytes(bytes(content))
    assert _refused(lambda: load_dataset("imagefolder", tmp_path)) is not None


def test_missing_dataset_paths_and_names_are_refused() -> None:
    from coinfer.core.data import load_dataset

    with pytest.raises(NotFound):
        load_dataset("npz", "/nonexistent/d.npz")
    with pytest.raises(InvalidInput):
        load_dataset("npz")
    with pytest.raises(NotFound):
        load_dataset("cifar-1000")
    with pytest.raises(NotFound):
        load_dataset("fashion-mnist", "/nonexistent-folder")
