"""Every `from coinfer.X import name` inside the package resolves.

Many modules import lazily inside functions (to keep `coinfer --help` fast), so a renamed or moved
name breaks only the command that reaches that line, long after the change; this reads the imports
instead of waiting for a run to reach them.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("core", "protos", "serving", "edge", "server", "rl", "testbed", "bench", "coinfer")


def _coinfer_imports() -> list[tuple[str, int, str, str]]:
    found = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("coinfer"):
                    found += [(str(path.relative_to(ROOT)), node.lineno, node.module, a.name) for a in node.names if a.name != "*"]
    return found


def test_every_coinfer_import_in_the_package_resolves() -> None:
    imports = _coinfer_imports()
    assert len(imports) > 200  # the scan reads the real tree, lazy imports included
    broken = []
    for where, line, module, name in imports:
        try:
            target = importlib.import_module(module)
        except ImportError as exc:
            broken.append(f"{where}:{line}: {module}: {exc}")
            continue
        if not hasattr(target, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                broken.append(f"{where}:{line}: {module} has no {name!r}")
    assert not broken, "\n".join(broken)
