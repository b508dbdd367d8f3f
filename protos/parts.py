"""Rebuild a bundle part as a module, for both daemons.

`Bundle.load_module` builds through the core model registry, which holds the backbones. The
split-point autoencoder halves (``ae-encoder``, ``ae-decoder``) are built from their own classes
here until the registry lists them; a role adds builders of its own (the coordinator: the DeViT
fusion head). Weights always come from `Bundle.load_state` (hash-checked safetensors) and load
strictly.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from coinfer.core.bundle import Bundle
from coinfer.core.errors import IntegrityError

Builder = Callable[[Mapping[str, Any]], Any]


def _autoencoder_builders() -> dict[str, Builder]:
    from coinfer.core.models.autoencoders import BottleneckDecoder, BottleneckEncoder

    return {BottleneckEncoder.arch: BottleneckEncoder.from_config_dict, BottleneckDecoder.arch: BottleneckDecoder.from_config_dict}


def load_part_module(bundle: Bundle, name: str, builders: Mapping[str, Builder] | None = None):
    """The part's module in eval mode, its weights verified and loaded strictly."""
    spec = bundle.part(name)
    arch = spec.config.get("arch")
    table = {**_autoencoder_builders(), **(builders or {})}
    builder = table.get(arch) if isinstance(arch, str) else None
    if builder is None:
        return bundle.load_module(name)
    module = builder(spec.config)
    try:
        module.load_state_dict(bundle.load_state(name), strict=True)
    except RuntimeError as exc:
        raise IntegrityError(f"part {name!r} of {bundle.path}: weights do not fit its config ({exc})") from exc
    return module.eval()
