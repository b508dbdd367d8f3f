import json
import os

import pytest
import torch

from coinfer.core import bundle as bundle_mod
from coinfer.core.bundle import PartToWrite, TensorSpec, load_bundle, write_bundle
from coinfer.core.errors import IntegrityError, InvalidInput, NotFound


def _parts():
    torch.manual_seed(0)
    return [
        PartToWrite("head", {"w": torch.randn(4, 3), "b": torch.zeros(4)}, role="head",
                    config={"arch": "x"}, inputs=[TensorSpec("image", "FP32", (-1, 1, 8, 8))],
                    outputs=[TensorSpec("feature", "FP32", (-1, 4))]),
        PartToWrite("tail", {"w": torch.randn(2, 4)}, role="tail"),
    ]


def test_round_trip(tmp_path):
    parts = _parts()
    b = write_bundle(tmp_path / "b", name="demo", kind="split", parts=parts, metadata={"point": 2},
                     extra_files={"report.json": "{}"})
    again = load_bundle(tmp_path / "b")
    assert again.name == "demo" and again.kind == "split" and again.metadata == {"point": 2}
    assert [p.name for p in again.manifest.parts] == ["head", "tail"]
    head = again.part("head")
    assert head.inputs[0] == TensorSpec("image", "FP32", (-1, 1, 8, 8))
    assert head.sha256 == bundle_mod.sha256_file(again.part_path("head"))
    for part in parts:
        state = again.load_state(part.name)
        assert state.keys() == part.tensors.keys()
        for k, v in part.tensors.items():
            assert torch.equal(state[k], v)
    assert (tmp_path / "b" / "report.json").read_text() == "{}"
    assert b.path == tmp_path / "b"
    with pytest.raises(NotFound, match="no part 'nope'"):
        again.part("nope")


def test_tampered_weights_are_refused(tmp_path):
    write_bundle(tmp_path / "b", name="demo", kind="split", parts=_parts())
    f = tmp_path / "b" / "head.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        load_bundle(tmp_path / "b")
    unverified = load_bundle(tmp_path / "b", verify=False)
    with pytest.raises(IntegrityError, match="sha256"):
        unverified.load_state("head")


def test_truncated_part_is_refused(tmp_path):
    write_bundle(tmp_path / "b", name="demo", kind="split", parts=_parts())
    f = tmp_path / "b" / "tail.safetensors"
    f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(IntegrityError):
        load_bundle(tmp_path / "b")


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(bundle_mod, "_swap_into_place", boom)
    with pytest.raises(OSError, match="disk full"):
        write_bundle(tmp_path / "b", name="demo", kind="split", parts=_parts())
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_the_old_bundle(tmp_path, monkeypatch):
    write_bundle(tmp_path / "b", name="old", kind="split", parts=_parts())
    bad = _parts()
    bad[1].tensors = {"w": "not a tensor"}
    with pytest.raises(AttributeError):
        write_bundle(tmp_path / "b", name="new", kind="split", parts=bad, overwrite=True)
    assert load_bundle(tmp_path / "b").name == "old"
    assert sorted(os.listdir(tmp_path)) == ["b"]
    write_bundle(tmp_path / "b", name="new", kind="split", parts=_parts(), overwrite=True)
    assert load_bundle(tmp_path / "b").name == "new"
    assert sorted(os.listdir(tmp_path)) == ["b"]


def test_existing_target_needs_overwrite(tmp_path):
    write_bundle(tmp_path / "b", name="demo", kind="split", parts=_parts())
    with pytest.raises(InvalidInput, match="already exists"):
        write_bundle(tmp_path / "b", name="demo", kind="split", parts=_parts())


def _edit_manifest(path, fn):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    "edit,error,match",
    [
        (lambda m: m.pop("parts"), InvalidInput, "missing field 'parts'"),
        (lambda m: m["parts"][0].pop("sha256"), InvalidInput, "missing field 'sha256'"),
        (lambda m: m["parts"][0].update(file="../outside.safetensors"), InvalidInput, "plain file name"),
        (lambda m: m["parts"][0].update(file="/etc/passwd"), InvalidInput, "plain file name"),
        (lambda m: m["parts"][0].update(sha256="zz"), InvalidInput, "sha256"),
        (lambda m: m.update(format_version=99), InvalidInput, "format_version"),
        (lambda m: m["parts"][1].update(name="head"), InvalidInput, "appears twice"),
        (lambda m: m["parts"][0].update(file="missing.safetensors"), NotFound, "missing"),
    ],
)
def test_bad_manifests_are_refused(tmp_path, edit, error, match):
    write_bundle(tmp_path / "b", name="demo", kind="split", parts=_parts())
    _edit_manifest(tmp_path / "b", edit)
    with pytest.raises(error, match=match):
        load_bundle(tmp_path / "b")


def test_not_a_bundle(tmp_path):
    with pytest.raises(NotFound, match="manifest.json"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        load_bundle(tmp_path)


def test_symlinked_part_is_refused(tmp_path):
    write_bundle(tmp_path / "b", name="demo", kind="split", parts=_parts())
    f = tmp_path / "b" / "tail.safetensors"
    target = tmp_path / "elsewhere.safetensors"
    f.rename(target)
    f.symlink_to(target)
    with pytest.raises(InvalidInput, match="links"):
        load_bundle(tmp_path / "b")


def test_load_path_never_unpickles(tmp_path, monkeypatch):
    import pickle

    write_bundle(tmp_path / "b", name="demo", kind="split", parts=_parts())

    def forbidden(*a, **k):
        raise AssertionError("unpickling on a load path")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    b = load_bundle(tmp_path / "b")
    assert set(b.load_state("head")) == {"w", "b"}
