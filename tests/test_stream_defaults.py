"""No function binds sys.stdout or sys.stderr as a default argument.

A default is evaluated once, at import: a function imported before pytest's capture (or any
redirection) starts keeps writing to the old stream, so its test passes alone and fails after
another test module imported it first. Read the stream at call time instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("core", "protos", "serving", "edge", "server", "rl", "testbed", "bench", "coinfer")
STREAMS = {"stdout", "stderr", "stdin"}


def _stream_defaults(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
            if isinstance(default, ast.Attribute) and default.attr in STREAMS and isinstance(default.value, ast.Name) \
                    and default.value.id == "sys":
                found.append(f"{where}:{default.lineno}: default sys.{default.attr}")
    return found


def test_the_scan_finds_a_stream_bound_at_import() -> None:
    assert _stream_defaults("import sys\ndef f(out=sys.stdout, *, err=sys.stderr): pass\n", "x.py") == [
        "x.py:2: default sys.stdout", "x.py:2: default sys.stderr"]
    assert _stream_defaults("import sys\ndef f(out=None):\n    out = out or sys.stdout\n", "x.py") == []


def test_no_function_binds_a_standard_stream_at_import() -> None:
    found = [hit for folder in FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))
             for hit in _stream_defaults(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "\n".join(found)
