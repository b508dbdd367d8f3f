"""The installed layout: every role folder's sub-packages are listed, nothing installs bare."""

import os
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_for_a_non_editable_install():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    # Folders of data only (scenarios, profiles) are listed too, so setuptools installs their files as packages.
    data = set(config["package-data"])
    found = set()
    for name, folder in config["package-dir"].items():
        assert name == "coinfer" or name.startswith("coinfer."), f"{name} would install outside the coinfer namespace"
        for root, _dirs, files in os.walk(ROOT / folder):
            rel = os.path.relpath(root, ROOT / folder)
            dotted = name if rel == "." else f"{name}.{rel.replace(os.sep, '.')}"
            if "__pycache__" not in root and ("__init__.py" in files or dotted in data):
                found.add(dotted)
    assert data <= found, f"package-data names folders that do not exist: {sorted(data - found)}"
    assert found == set(config["packages"])


def test_every_subcommand_has_help():
    from coinfer.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"serve", "edge", "decompose", "split", "profile", "rl", "simulate", "demo", "bench", "teacher"} <= set(sub.choices)
    for name, p in sub.choices.items():
        assert p.format_help().startswith("usage: coinfer " + name)
