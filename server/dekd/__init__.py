"""DEKD (DeViT): decompose a ViT teacher into N device sub-models and a fusion head.

Modules, in pipeline order: ``teacher`` (train / import / load the teacher), ``partition``
(class groups), ``prune`` and ``sizing`` (sub-model structure per device budget), ``targets``
(cached teacher outputs), ``distill`` (sub-task distillation), ``ensemble`` (the fusion head of
``coinfer.core.models.fusion`` trained jointly with device dropout), ``baseline`` (single-student comparison),
``pipeline`` (end to end), ``report``, ``cli``; the benchmark is ``coinfer.bench.dekd``.

The deployable bundle is written, read and checked by ``coinfer.core.devit_bundle``
(`write_devit_bundle`, `read_devit_layout`, `load_devit`).
"""
