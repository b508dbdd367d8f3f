"""The bundles a coordinator serves: at most one split model and any number of DeViT models.

Loading verifies every part's hash (`core.bundle.load_bundle`). The catalogue is also the part
store devices download from: `iter_part` streams a part file in chunks and hashes what it
reads, so a file changed on disk since it was verified ends the stream with DATA_LOSS instead
of reaching a device. It also answers the coordinator's own OIP front door, where the split
model runs whole and DeViT models fan out to the devices.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from coinfer.core.bundle import Bundle, load_bundle
from coinfer.core.devit_bundle import DEVIT_KIND
from coinfer.core.errors import IntegrityError, InvalidInput, NotFound
from coinfer.serving.oip_service import InferCall, InferResult
from coinfer.core.split_point import is_split_bundle
from coinfer.server.deployment import SplitDeployment
from coinfer.server.devit_service import DeViTServeConfig, DeViTServing, FanOutRouter

DEFAULT_CHUNK_BYTES = 256 * 1024
MAX_CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class PartChunkData:
    """One piece of a part file on its way to a device."""

    offset: int
    data: bytes
    total_size_bytes: int
    sha256: str


class ModelCatalog:
    """Loaded bundles by name, the split deployment, the DeViT models."""

    def __init__(self, bundles: Sequence[Bundle], devit_config: DeViTServeConfig | None = None) -> None:
        if not bundles:
            raise InvalidInput("the coordinator needs at least one bundle (--bundle DIR)")
        self.bundles: dict[str, Bundle] = {}
        self.split: SplitDeployment | None = None
        self.devit: dict[str, DeViTServing] = {}
        for bundle in bundles:
            if bundle.name in self.bundles:
                raise InvalidInput(f"two bundles are named {bundle.name!r} ({self.bundles[bundle.name].path} and {bundle.path})")
            self.bundles[bundle.name] = bundle
            if bundle.kind == DEVIT_KIND:
                model = DeViTServing(bundle, devit_config)
                self._check_name(model.name, bundle)
                self.devit[model.name] = model
            elif is_split_bundle(bundle):
                if self.split is not None:
                    raise InvalidInput(
                        f"{bundle.path}: the coordinator serves one split model at a time (already {self.split.bundle.path}); "
                        "a device runs one split model"
                    )
                split = SplitDeployment(bundle)
                self._check_name(split.model_name, bundle)
                self.split = split
            else:
                raise InvalidInput(f"{bundle.path}: bundles of kind {bundle.kind!r} cannot be served (split or devit bundles can)")

    @classmethod
    def load(cls, paths: Sequence[str | Path], devit_config: DeViTServeConfig | None = None) -> ModelCatalog:
        return cls([load_bundle(p) for p in paths], devit_config)

    def _check_name(self, name: str, bundle: Bundle) -> None:
        if name in self.model_names():
            raise InvalidInput(f"{bundle.path}: another bundle already serves a model named {name!r}")

    def model_names(self) -> list[str]:
        names = [self.split.model_name] if self.split is not None else []
        return names + list(self.devit)

    def attach_router(self, router: FanOutRouter) -> None:
        for model in self.devit.values():
            model.router = router

    def close(self) -> None:
        """Let go of the DeViT models' fan-out threads (once no request is in flight)."""
        for model in self.devit.values():
            model.close()

    # Part store ----------------------------------------------------------------------------

    def iter_part(self, bundle_name: str, part_name: str, offset: int = 0, chunk_bytes: int = 0, default_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[PartChunkData]:
        """Stream a part file from ``offset`` in chunks; IntegrityError at the end if it changed on disk."""
        bundle = self.bundles.get(bundle_name)
        if bundle is None:
            raise NotFound(f"the coordinator serves no bundle {bundle_name!r} (it serves {', '.join(sorted(self.bundles))})")
        spec = bundle.part(part_name)
        if offset < 0 or offset > spec.size_bytes:
            raise InvalidInput(f"offset {offset} is outside part {part_name!r} of {spec.size_bytes} bytes")
        if chunk_bytes < 0:
            raise InvalidInput(f"chunk_bytes must not be negative, got {chunk_bytes}")
        size = min(chunk_bytes or default_chunk_bytes, MAX_CHUNK_BYTES)
        return _read_chunks(bundle.part_path(part_name), offset, size, spec.size_bytes, spec.sha256, f"{bundle_name}/{part_name}")


def _read_chunks(path: Path, offset: int, chunk_bytes: int, total: int, sha256: str, what: str) -> Iterator[PartChunkData]:
    # The bytes before `offset` are hashed too, so a resumed download is checked as a whole.
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        remaining = offset
        while remaining:
            block = fh.read(min(1 << 20, remaining))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)
        position = offset
        while position < total:
            data = fh.read(min(chunk_bytes, total - position))
            if not data:
                break
            digest.update(data)
            if position + len(data) == total and (fh.read(1) or digest.hexdigest() != sha256):
                raise IntegrityError(f"part {what} changed on the coordinator's disk since it was verified; refusing to send it")
            yield PartChunkData(position, data, total, sha256)
            position += len(data)
    if position < total:
        raise IntegrityError(f"part {what} is shorter on disk ({position} bytes) than its manifest says ({total})")
    if position == offset == total:
        yield PartChunkData(offset, b"", total, sha256)  # an empty part still gets one chunk


class CoordinatorModels:
    """The coordinator's OIP model repository: the split model run whole here, DeViT models fanned out."""

    server_name = "coinfer-coordinator"

    def __init__(self, catalog: ModelCatalog) -> None:
        self._models: dict[str, object] = {}
        if catalog.split is not None:
            self._models[catalog.split.model_name] = LocalSplitModel(catalog.split)
        self._models.update(catalog.devit)

    def is_ready(self) -> bool:
        return True

    def get(self, name: str):
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"unknown model {name!r}; this server serves {', '.join(repr(n) for n in self._models)}")
        return model


class LocalSplitModel:
    """The split model run whole on the coordinator (no device, no link)."""

    version = "1"
    platform = "coinfer_split"

    def __init__(self, deployment: SplitDeployment) -> None:
        self.deployment = deployment
        self.name = deployment.model_name
        self.inputs = deployment.inputs
        self.outputs = deployment.outputs
        self.max_batch = deployment.max_batch

    def is_ready(self) -> bool:
        return True

    def infer(self, inputs: dict[str, np.ndarray], call: InferCall) -> InferResult:
        started = time.perf_counter()
        logits = self.deployment.run_local(inputs[self.inputs[0].name])
        return InferResult({self.outputs[0].name: logits}, {"compute_ms": (time.perf_counter() - started) * 1e3})
