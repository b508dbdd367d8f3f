"""The device's local store of bundle parts: download by chunks, verify, load.

Layout: ``<cache>/<bundle>/<part>.safetensors`` plus a ``manifest.json`` listing the parts the
device holds, in the core bundle format, so loading goes through `core.bundle.load_bundle`
(which checks every hash again and rebuilds modules strictly). A download lands in a
``.partial`` file first and is renamed into place only once its size and sha256 match what the
assignment promised; a mismatch deletes it and raises IntegrityError. An interrupted download
resumes from the partial file's length.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

from coinfer.core.bundle import FORMAT_VERSION, MANIFEST, Bundle, Manifest, PartSpec, load_bundle, sha256_file
from coinfer.core.errors import IntegrityError, InvalidInput

log = logging.getLogger(__name__)


class Chunk(Protocol):
    """What a FetchPart stream yields (the generated PartChunk fits)."""

    offset: int
    data: bytes
    total_size_bytes: int
    sha256: str


# fetch(bundle, part, offset) -> chunks from `offset` to the end of the part file.
FetchFn = Callable[[str, str, int], Iterable[Chunk]]


def _plain_name(name: str, what: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise InvalidInput(f"{what} {name!r} is not a plain name")
    return name


class PartCache:
    """Parts of bundles kept on this device, verified against their sha256."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def bundle_dir(self, bundle: str) -> Path:
        return self.root / _plain_name(bundle, "bundle name")

    def path_of(self, bundle: str, spec: PartSpec) -> Path:
        return self.bundle_dir(bundle) / _plain_name(spec.file, "part file")

    def has(self, bundle: str, spec: PartSpec) -> bool:
        """Whether the part is here with the right size and hash."""
        path = self.path_of(bundle, spec)
        return path.is_file() and path.stat().st_size == spec.size_bytes and sha256_file(path) == spec.sha256

    def ensure(self, bundle: str, spec: PartSpec, fetch: FetchFn) -> Path:
        """The part's verified local file, downloading it (or the rest of it) when needed."""
        path = self.path_of(bundle, spec)
        if self.has(bundle, spec):
            log.info("part %s/%s already cached (sha256 %s…)", bundle, spec.name, spec.sha256[:12])
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        offset = partial.stat().st_size if partial.is_file() else 0
        if offset > spec.size_bytes:
            partial.unlink()
            offset = 0
        digest = hashlib.sha256()
        if offset:
            with open(partial, "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
            log.info("resuming %s/%s at byte %d of %d", bundle, spec.name, offset, spec.size_bytes)
        with open(partial, "ab") as out:
            for chunk in self._checked(fetch(bundle, spec.name, offset), spec, offset):
                out.write(chunk)
                digest.update(chunk)
            out.flush()
            os.fsync(out.fileno())
        received = partial.stat().st_size
        if received != spec.size_bytes or digest.hexdigest() != spec.sha256:
            partial.unlink(missing_ok=True)
            raise IntegrityError(
                f"part {bundle}/{spec.name}: received {received} bytes with sha256 {digest.hexdigest()[:12]}…, "
                f"expected {spec.size_bytes} bytes with sha256 {spec.sha256[:12]}…; refused and deleted"
            )
        os.replace(partial, path)
        log.info("downloaded part %s/%s (%d bytes, sha256 ok)", bundle, spec.name, received)
        return path

    @staticmethod
    def _checked(chunks: Iterable[Chunk], spec: PartSpec, offset: int) -> Iterator[bytes]:
        position = offset
        for chunk in chunks:
            if chunk.sha256 and chunk.sha256 != spec.sha256:
                raise IntegrityError(
                    f"part {spec.name!r}: the coordinator streams sha256 {chunk.sha256[:12]}…, the assignment "
                    f"promised {spec.sha256[:12]}…; refusing the download"
                )
            if chunk.total_size_bytes != spec.size_bytes:
                raise IntegrityError(f"part {spec.name!r}: stream says {chunk.total_size_bytes} bytes, assignment {spec.size_bytes}")
            if chunk.offset != position:
                raise IntegrityError(f"part {spec.name!r}: chunk at offset {chunk.offset}, expected {position}")
            if position + len(chunk.data) > spec.size_bytes:
                raise IntegrityError(f"part {spec.name!r}: stream runs past the part's {spec.size_bytes} bytes")
            position += len(chunk.data)
            yield chunk.data

    def open_bundle(self, bundle: str, parts: Sequence[PartSpec], kind: str = "edge-cache") -> Bundle:
        """A core Bundle over the cached ``parts`` (hashes verified again by `load_bundle`)."""
        directory = self.bundle_dir(bundle)
        manifest = Manifest(FORMAT_VERSION, bundle, kind, tuple(parts), {"source": "coordinator"})
        tmp = directory / (MANIFEST + ".tmp")
        tmp.write_text(manifest.to_json())
        os.replace(tmp, directory / MANIFEST)
        return load_bundle(directory)
