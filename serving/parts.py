"""Rebuild a bundle part as a module, for both daemons.

`Bundle.load_module` builds through the core model registry (`coinfer.core.models.build_model`),
which holds the backbones and the split-point autoencoder halves. A role adds builders of its own
for parts the registry does not know (the coordinator: the DeViT fusion head). Weights always come
from `Bundle.load_state` (hash-checked safetensors) and load strictly.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from coinfer.core.bundle import Bundle
from coinfer.core.errors import IntegrityError

Builder = Callable[[Mapping[str, Any]], Any]


def load_part_module(bundle: Bundle, name: str, builders: Mapping[str, Builder] | None = None):
    """The part's module in eval mode, its weights verified and loaded strictly.

    ``builders`` maps an ``arch`` the core registry does not hold to a function building the
    module from the part's config.
    """
    spec = bundle.part(name)
    arch = spec.config.get("arch")
    builder = (builders or {}).get(arch) if isinstance(arch, str) else None
    if builder is None:
        return bundle.load_module(name)
    module = builder(spec.config)
    try:
        module.load_state_dict(bundle.load_state(name), strict=True)
    except RuntimeError as exc:
        raise IntegrityError(f"part {name!r} of {bundle.path}: weights do not fit its config ({exc})") from exc
    return module.eval()
