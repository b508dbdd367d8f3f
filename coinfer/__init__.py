"""coinfer: heterogeneous collaborative edge inference.

The installed package maps the repository's role folders under one namespace:
``coinfer.core`` (shared models, data, bundles, codec, split-point halves, training loop),
``coinfer.protos`` (wire contract), ``coinfer.serving`` (what both daemons share),
``coinfer.edge`` (device daemon, profiling), ``coinfer.server`` (coordinator, decomposition and
split-point training), ``coinfer.rl`` (simulators, MAHPPO, baselines), ``coinfer.testbed``
(emulated devices) and ``coinfer.bench`` (benchmarks, fault injection, fixtures).

The Python API runs what the ``coinfer`` command runs:

* ``train_teacher``, ``import_teacher``, ``decompose``: a ViT teacher and its DEKD decomposition
  into a DeViT bundle;
* ``split``, ``profile``: a split bundle and this machine's costs at each of its points;
* ``serve``, ``start_edge``: a coordinator and an edge daemon started in this process, each a
  handle with ``.address`` and ``.stop()``; ``InferenceClient`` calls either (Open Inference
  Protocol). The edge starter is ``start_edge`` because ``coinfer.edge`` is the edge package;
* ``coinfer.rl``: the simulator's gymnasium and PettingZoo views (``make_env``,
  ``make_vec_env``, ``parallel_env``; the id ``coinfer/Offloading-v0``), ``train_mahppo`` and
  ``evaluate``.

Names load on first use, so ``import coinfer`` (and ``coinfer --help``) imports neither torch
nor grpc.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from coinfer.core.version import __version__

_EXPORTS: dict[str, tuple[str, str]] = {
    "train_teacher": ("coinfer.api", "train_teacher"),
    "import_teacher": ("coinfer.server.dekd.teacher", "import_teacher"),
    "decompose": ("coinfer.api", "decompose"),
    "split": ("coinfer.api", "split"),
    "profile": ("coinfer.api", "profile"),
    "serve": ("coinfer.server.serve", "serve_coordinator"),
    "start_edge": ("coinfer.edge.serve", "serve_edge"),
    "InferenceClient": ("coinfer.serving.client", "InferenceClient"),
}
"""Public name -> (module, attribute) it is loaded from on first use."""

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from coinfer.api import decompose, profile, split, train_teacher
    from coinfer.edge.serve import serve_edge as start_edge
    from coinfer.server.dekd.teacher import import_teacher
    from coinfer.server.serve import serve_coordinator as serve
    from coinfer.serving.client import InferenceClient


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'coinfer' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
