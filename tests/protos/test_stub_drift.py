"""The committed stubs are exactly what the committed .proto files generate."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

pytest.importorskip("grpc_tools", reason="stub generation needs grpcio-tools (the test extra)")

from coinfer.protos import generate


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    protos = generate.proto_files()
    assert {p.name for p in written} == set(generate.stub_names(protos))
    drifted = []
    for fresh in written:
        committed = generate.PROTO_DIR / fresh.name
        if not committed.is_file():
            drifted.append(f"{fresh.name}: missing from protos/ (run `make protos`)")
            continue
        if committed.read_bytes() != fresh.read_bytes():
            diff = difflib.unified_diff(
                committed.read_text().splitlines(),
                fresh.read_text().splitlines(),
                f"committed/{fresh.name}",
                f"fresh/{fresh.name}",
                lineterm="",
                n=1,
            )
            drifted.append(f"{fresh.name} differs (run `make protos`):\n" + "\n".join(list(diff)[:20]))
    assert not drifted, "\n".join(drifted)


def test_generated_imports_use_the_package_path(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    grpc_stub = (tmp_path / "inference_pb2_grpc.py").read_text()
    assert "from coinfer.protos import inference_pb2" in grpc_stub
