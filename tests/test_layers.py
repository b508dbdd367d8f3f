"""Imports flow one way: core <- protos <- serving <- edge / server; core <- rl <- testbed <- server.

bench and the command line (the top package) sit above every role, so no role may import them.
Read from the source, lazy imports inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("core", "protos", "serving", "edge", "server", "rl", "testbed", "bench")
BELOW: dict[str, set[str]] = {
    "core": set(),
    "protos": {"core"},
    "serving": {"core", "protos"},
    "edge": {"core", "protos", "serving"},
    "rl": {"core"},
    "testbed": {"core", "rl"},
    "server": {"core", "protos", "serving", "rl", "testbed"},
}


def _layer(module: str) -> str:
    """The role a coinfer module belongs to ("coinfer" for the top package and the command line)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROLES else "coinfer"


def test_no_role_imports_a_role_above_it() -> None:
    upward = []
    for role, below in BELOW.items():
        for path in sorted((ROOT / role).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules = [node.module or ""]
                elif isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                else:
                    continue
                for module in modules:
                    if (module == "coinfer" or module.startswith("coinfer.")) and _layer(module) not in below | {role}:
                        upward.append(f"{path.relative_to(ROOT)}:{node.lineno}: {role} imports {module}")
    assert not upward, "\n".join(upward)
