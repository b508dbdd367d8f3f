"""Bundles: a directory of safetensors weights described by `manifest.json`.

A bundle is what the server deploys to devices: one or more parts (a sub-model, a split head,
a tail, an encoder, a fusion head), each a safetensors file whose sha256 the manifest records,
with the tensor names, datatypes and shapes of its inputs and outputs and the config that
rebuilds its module.

Guarantees:
- loading checks every hash (and again for the exact bytes a part is loaded from) and refuses a
  mismatch, a truncated file or a manifest path that leaves the bundle directory;
- writing goes to a temporary sibling directory renamed into place, so a failure never leaves a
  half-written bundle behind;
- nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from coinfer.core.errors import IntegrityError, InvalidInput, NotFound

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class TensorSpec:
    """Name, OIP datatype and shape (-1 for a variable dimension) of one part input or output."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def accepts(self, datatype: str, shape: Sequence[int]) -> bool:
        """Whether a tensor of ``datatype`` and ``shape`` fits this declaration."""
        return (
            datatype == self.datatype
            and len(shape) == len(self.shape)
            and all(want in (-1, got) for want, got in zip(self.shape, shape))
        )


@dataclass(frozen=True)
class PartSpec:
    """One deployable part of a bundle, as recorded in the manifest."""

    name: str
    file: str
    sha256: str
    size_bytes: int
    role: str
    """What the part does: e.g. "head", "tail", "encoder", "decoder", "submodel", "fusion", "model"."""
    config: dict[str, Any] = field(default_factory=dict)
    """Rebuilds the module: `build_model(config)`, with an optional "segment": [start, end]."""
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


@dataclass(frozen=True)
class Manifest:
    format_version: int
    name: str
    kind: str
    """"split", "devit", "teacher", "skeleton", ..."""
    parts: tuple[PartSpec, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"


@dataclass
class PartToWrite:
    """A part handed to `write_bundle`: its tensors and how to describe them."""

    name: str
    tensors: Mapping[str, Any]
    """Tensor name -> torch.Tensor (a module's state_dict)."""
    role: str
    config: dict[str, Any] = field(default_factory=dict)
    inputs: Sequence[TensorSpec] = ()
    outputs: Sequence[TensorSpec] = ()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_file_name(name: str, bundle_dir: Path, what: str) -> Path:
    """A part file must be a plain file name inside the bundle: no folders, no escapes."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise InvalidInput(f"{bundle_dir / MANIFEST}: {what} {name!r} is not a plain file name inside the bundle")
    return bundle_dir / name


def write_bundle(
    path: str | Path,
    *,
    name: str,
    kind: str,
    parts: Sequence[PartToWrite],
    metadata: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, str | bytes] | None = None,
    overwrite: bool = False,
) -> "Bundle":
    """Write a bundle atomically and return it loaded (hashes verified).

    `extra_files` (e.g. report.json) are written inside the same atomic step.
    """
    from safetensors.torch import save as save_safetensors

    path = Path(path)
    if path.exists() and not overwrite:
        raise InvalidInput(f"{path} already exists; choose another folder or allow overwriting")
    if not parts:
        raise InvalidInput("a bundle needs at least one part")
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        raise InvalidInput(f"part names must be unique, got {names}")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        specs = []
        for part in parts:
            file_name = f"{part.name}.safetensors"
            _check_file_name(file_name, staging, "part file")
            tensors = {k: v.detach().contiguous().cpu() for k, v in part.tensors.items()}
            data = save_safetensors(tensors)
            _write_durably(staging / file_name, data)
            specs.append(
                PartSpec(
                    name=part.name,
                    file=file_name,
                    sha256=sha256_bytes(data),
                    size_bytes=len(data),
                    role=part.role,
                    config=dict(part.config),
                    inputs=tuple(part.inputs),
                    outputs=tuple(part.outputs),
                )
            )
        manifest = Manifest(FORMAT_VERSION, name, kind, tuple(specs), dict(metadata or {}))
        for extra_name, content in (extra_files or {}).items():
            target = _check_file_name(extra_name, staging, "extra file")
            _write_durably(target, content.encode() if isinstance(content, str) else content)
        _write_durably(staging / MANIFEST, manifest.to_json().encode())
        _swap_into_place(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(path)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _swap_into_place(staging: Path, path: Path) -> None:
    if not path.exists():
        staging.rename(path)
        return
    # Replacing an existing bundle: move the old one aside first so that at every moment
    # `path` is either the whole old bundle or the whole new one.
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    path.rename(old)
    try:
        staging.rename(path)
    except BaseException:
        old.rename(path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _parse_tensor_specs(raw: object, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list):
        raise InvalidInput(f"{where} must be a list")
    specs = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not {"name", "datatype", "shape"} <= item.keys():
            raise InvalidInput(f"{where}[{i}] must have name, datatype and shape")
        if not isinstance(item["shape"], list) or not all(isinstance(d, int) and d >= -1 for d in item["shape"]):
            raise InvalidInput(f"{where}[{i}].shape must be a list of integers >= -1")
        specs.append(TensorSpec(str(item["name"]), str(item["datatype"]), tuple(item["shape"])))
    return tuple(specs)


def parse_manifest(data: object, bundle_dir: Path) -> Manifest:
    """Validate a decoded manifest.json; every problem names the field."""
    where = bundle_dir / MANIFEST
    if not isinstance(data, dict):
        raise InvalidInput(f"{where}: the manifest must be a JSON object")
    for key in ("format_version", "name", "kind", "parts"):
        if key not in data:
            raise InvalidInput(f"{where}: missing field {key!r}")
    if data["format_version"] != FORMAT_VERSION:
        raise InvalidInput(f"{where}: format_version {data['format_version']!r} is not supported (expected {FORMAT_VERSION})")
    if not isinstance(data["parts"], list) or not data["parts"]:
        raise InvalidInput(f"{where}: field 'parts' must be a non-empty list")
    parts = []
    seen = set()
    for i, raw in enumerate(data["parts"]):
        if not isinstance(raw, dict):
            raise InvalidInput(f"{where}: parts[{i}] must be an object")
        for key in ("name", "file", "sha256", "size_bytes", "role"):
            if key not in raw:
                raise InvalidInput(f"{where}: parts[{i}] is missing field {key!r}")
        _check_file_name(raw["file"], bundle_dir, f"parts[{i}].file")
        if not isinstance(raw["name"], str) or not raw["name"]:
            raise InvalidInput(f"{where}: parts[{i}].name must be a non-empty string")
        if raw["name"] in seen:
            raise InvalidInput(f"{where}: part name {raw['name']!r} appears twice")
        seen.add(raw["name"])
        sha = raw["sha256"]
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise InvalidInput(f"{where}: parts[{i}].sha256 is not a lowercase hex sha256")
        if not isinstance(raw["size_bytes"], int) or raw["size_bytes"] < 0:
            raise InvalidInput(f"{where}: parts[{i}].size_bytes must be a non-negative integer")
        config = raw.get("config", {})
        if not isinstance(config, dict):
            raise InvalidInput(f"{where}: parts[{i}].config must be an object")
        parts.append(
            PartSpec(
                name=str(raw["name"]),
                file=raw["file"],
                sha256=sha,
                size_bytes=raw["size_bytes"],
                role=str(raw["role"]),
                config=config,
                inputs=_parse_tensor_specs(raw.get("inputs", []), f"{where}: parts[{i}].inputs"),
                outputs=_parse_tensor_specs(raw.get("outputs", []), f"{where}: parts[{i}].outputs"),
            )
        )
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise InvalidInput(f"{where}: field 'metadata' must be an object")
    return Manifest(FORMAT_VERSION, str(data["name"]), str(data["kind"]), tuple(parts), metadata)


class Bundle:
    """A loaded bundle whose every part file matched its recorded hash when it was opened."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def metadata(self) -> dict[str, Any]:
        return self.manifest.metadata

    def part(self, name: str) -> PartSpec:
        for spec in self.manifest.parts:
            if spec.name == name:
                return spec
        raise NotFound(f"bundle {self.name!r} has no part {name!r} (parts: {', '.join(p.name for p in self.manifest.parts)})")

    def part_path(self, name: str) -> Path:
        return self.path / self.part(name).file

    def read_part_bytes(self, name: str) -> bytes:
        """The part file's bytes, verified against the manifest hash."""
        spec = self.part(name)
        data = self.part_path(name).read_bytes()
        if len(data) != spec.size_bytes or sha256_bytes(data) != spec.sha256:
            raise IntegrityError(f"{self.path / spec.file}: contents do not match the manifest's sha256 (tampered or truncated)")
        return data

    def load_state(self, name: str) -> dict[str, Any]:
        """The part's tensors, loaded from exactly the bytes that passed the hash check."""
        from safetensors.torch import load as load_safetensors

        data = self.read_part_bytes(name)
        try:
            return load_safetensors(data)
        except Exception as exc:  # safetensors raises its own error types for malformed headers
            raise IntegrityError(f"{self.path / self.part(name).file}: not a valid safetensors file ({exc})") from exc

    def load_module(self, name: str):
        """Rebuild the part's module from its config and load its weights strictly."""
        from coinfer.core.models import build_model

        spec = self.part(name)
        config = dict(spec.config)
        segment = config.pop("segment", None)
        if segment is not None and not (
            isinstance(segment, list) and len(segment) == 2 and all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in segment)
        ):
            raise InvalidInput(f"part {name!r} of {self.path}: config.segment must be [start, end], got {segment!r}")
        module = build_model(config)
        if segment is not None:
            if not callable(getattr(module, "segment", None)):  # the bottleneck halves have no split points
                raise InvalidInput(f"part {name!r} of {self.path}: config.segment applies to backbones, not to arch {config['arch']!r}")
            module = module.segment(*segment)
        state = self.load_state(name)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise IntegrityError(f"part {name!r} of {self.path}: weights do not fit its config ({exc})") from exc
        return module.eval()


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle, validating its manifest and (by default) every part's hash."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise NotFound(f"{path} is not a bundle: {MANIFEST} is missing")
    try:
        data = json.loads(manifest_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{manifest_path}: not valid JSON ({exc})") from exc
    manifest = parse_manifest(data, path)
    bundle = Bundle(path, manifest)
    for spec in manifest.parts:
        file = path / spec.file
        if file.is_symlink():
            raise InvalidInput(f"{file}: part files must be regular files, not links")
        if not file.is_file():
            raise NotFound(f"{file}: part {spec.name!r} is listed in the manifest but its file is missing")
        if verify and (file.stat().st_size != spec.size_bytes or sha256_file(file) != spec.sha256):
            raise IntegrityError(f"{file}: contents do not match the manifest's sha256 (tampered or truncated)")
    return bundle
