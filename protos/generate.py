"""Regenerate the Python stubs of every .proto file in this folder.

    python -m coinfer.protos.generate [--out DIR]

The .proto files are staged under a temporary ``coinfer/protos/`` folder and protoc runs with
that temporary root as its include path, so the generated modules import each other as
``from coinfer.protos import X_pb2`` (the installed package name) rather than by a bare module
name. Three files come out per .proto: ``X_pb2.py``, ``X_pb2.pyi`` and ``X_pb2_grpc.py``.
They are committed next to the .proto files and never edited by hand; a test regenerates them
and fails on any difference.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from coinfer.core.errors import FailedPrecondition

PROTO_DIR = Path(__file__).resolve().parent
# Where the stubs live inside the import namespace; protoc derives import paths from this.
PACKAGE_PATH = Path("coinfer") / "protos"
STUB_SUFFIXES: tuple[str, ...] = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files(proto_dir: Path = PROTO_DIR) -> list[Path]:
    """The .proto sources, sorted so generation order never depends on the file system."""
    return sorted(proto_dir.glob("*.proto"))


def stub_names(protos: Sequence[Path]) -> list[str]:
    """File names of every stub generated from ``protos``."""
    return [p.stem + suffix for p in protos for suffix in STUB_SUFFIXES]


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Generate the stubs of every .proto in ``proto_dir`` into ``out_dir``; return their paths."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # grpcio-tools is a dev/test extra, not a runtime dependency
        raise FailedPrecondition(
            "regenerating stubs needs grpcio-tools: pip install 'coinfer[dev]'"
        ) from exc
    import importlib.resources

    protos = proto_files(proto_dir)
    if not protos:
        raise FailedPrecondition(f"no .proto files in {proto_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    # protoc's own copies of google/protobuf/*.proto, in case a file imports a well-known type.
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory(prefix="coinfer-protoc-") as tmp:
        root = Path(tmp)
        staged_dir = root / "in" / PACKAGE_PATH
        staged_dir.mkdir(parents=True)
        built = root / "out"
        built.mkdir()
        staged = []
        for proto in protos:
            shutil.copyfile(proto, staged_dir / proto.name)
            staged.append(str(PACKAGE_PATH / proto.name))
        args = [
            "grpc_tools.protoc",
            f"--proto_path={root / 'in'}",
            f"--proto_path={well_known}",
            f"--python_out={built}",
            f"--pyi_out={built}",
            f"--grpc_python_out={built}",
            *staged,
        ]
        # The staged names are virtual paths under the include root, which fixes the import
        # paths written into the stubs whatever the current directory is.
        rc = protoc.main(args)
        if rc != 0:
            raise FailedPrecondition(f"protoc failed with exit status {rc} (see its messages above)")
        written = []
        for name in stub_names(protos):
            source = built / PACKAGE_PATH / name
            if not source.is_file():
                raise FailedPrecondition(f"protoc did not produce {name}")
            target = out_dir / name
            shutil.copyfile(source, target)
            written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coinfer.protos.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=PROTO_DIR, help="folder for the stubs (default: next to the .proto files)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
