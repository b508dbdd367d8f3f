"""coinfer: heterogeneous collaborative edge inference.

The installed package maps the repository's role folders under one namespace:
``coinfer.core`` (shared models, data, bundles, tensor codec), ``coinfer.server``
(coordinator, decomposition and split-point training), ``coinfer.edge`` (device daemon,
profiling), ``coinfer.rl`` (simulators, MAHPPO, baselines) and ``coinfer.protos`` (wire contract).
"""

from coinfer.core.version import __version__
