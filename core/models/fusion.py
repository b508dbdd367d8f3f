"""The DeViT fusion head: N device CLS features in, class logits out, with devices allowed to be missing.

DeViT concatenates the N final CLS tokens, maps them linearly to the teacher's width and
classifies that with a linear head. We keep that and add an explicit presence mask: a feature
marked missing is replaced by a learned per-device "missing" embedding before the map, so a
missing device is never silently read as a zero vector (zero is a real, confident feature for a
linear map). Trained with random device dropout, the missing embeddings learn what the absent
device would have said on average.

The fusion head is in the core model registry beside the backbones and the bottleneck halves,
though it is not a splittable backbone: ``build_model({"arch": "devit-fusion", ...})`` (and so
`Bundle.load_module` on a DeViT bundle's fusion part) rebuilds it from its manifest config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from coinfer.core.errors import InvalidInput
from coinfer.core.models._config import check_positive_int, config_for_arch

ARCH = "devit-fusion"
_WHAT = ARCH


@dataclass(frozen=True)
class FusionConfig:
    """Shape of one fusion head."""

    feature_dims: tuple[int, ...]
    """Width of each device's CLS feature, in device order (at least 2 devices)."""
    embed_dim: int
    """Width of the fused token h: the teacher's CLS width, which h is trained to match."""
    num_classes: int
    """Classes of the final linear classifier."""

    def __post_init__(self) -> None:
        if isinstance(self.feature_dims, list):
            object.__setattr__(self, "feature_dims", tuple(self.feature_dims))
        if not isinstance(self.feature_dims, tuple) or len(self.feature_dims) < 2:
            raise InvalidInput(f"{_WHAT}: feature_dims must list at least 2 device widths, got {self.feature_dims!r}")
        for i, d in enumerate(self.feature_dims):
            check_positive_int(_WHAT, f"feature_dims[{i}]", d)
        check_positive_int(_WHAT, "embed_dim", self.embed_dim)
        check_positive_int(_WHAT, "num_classes", self.num_classes)

    @property
    def num_devices(self) -> int:
        """N, the number of device features the head takes."""
        return len(self.feature_dims)


class DeViTFusion(nn.Module):
    """h = W_map [f'_1 .. f'_N] + b, logits = W_cls h + b, where f'_i is f_i or the missing embedding."""

    arch = ARCH

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        if not isinstance(config, FusionConfig):
            raise InvalidInput(f"DeViTFusion needs a FusionConfig, got {type(config).__name__}")
        self.config = config
        total = sum(config.feature_dims)
        # One learned stand-in per device, stored concatenated so the forward is a single where().
        self.missing = nn.Parameter(torch.zeros(total))
        self.map = nn.Linear(total, config.embed_dim)
        self.head = nn.Linear(config.embed_dim, config.num_classes)
        nn.init.trunc_normal_(self.map.weight, std=0.02)
        nn.init.zeros_(self.map.bias)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.register_buffer(
            "_device_of_column",
            torch.repeat_interleave(torch.arange(config.num_devices), torch.tensor(config.feature_dims)),
            persistent=False,
        )

    @classmethod
    def from_config_dict(cls, values: Mapping[str, Any]) -> DeViTFusion:
        """Build from ``{"arch": "devit-fusion", **FusionConfig fields}`` (the registry's entry point)."""
        return cls(config_for_arch(FusionConfig, values, ARCH))

    def config_dict(self) -> dict[str, Any]:
        """JSON-ready config; ``build_model`` on it builds the same head."""
        out = {"arch": ARCH, **asdict(self.config)}
        out["feature_dims"] = list(self.config.feature_dims)
        return out

    def num_params(self) -> int:
        """Parameters of the head."""
        return sum(p.numel() for p in self.parameters())

    def macs(self) -> int:
        """Multiply-accumulates of one fused image: the map and the classifier."""
        return self.map.in_features * self.map.out_features + self.head.in_features * self.head.out_features

    def _check(self, features: torch.Tensor, present: torch.Tensor) -> None:
        n, total = self.config.num_devices, self.map.in_features
        if features.ndim != 2 or features.shape[1] != total:
            raise InvalidInput(f"fusion expects features of shape (B, {total}), got {tuple(features.shape)}")
        if present.shape != (features.shape[0], n):
            raise InvalidInput(f"fusion expects a presence mask of shape (B, {n}), got {tuple(present.shape)}")

    def fuse(self, features: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, logits) from concatenated features (B, sum of widths) and a presence mask (B, N).

        Where ``present[b, i]`` is false, device i's slice of ``features`` is ignored (any value,
        e.g. zeros) and its learned missing embedding is used instead.
        """
        present = present.to(torch.bool)
        self._check(features, present)
        keep = present[:, self._device_of_column]
        x = torch.where(keep, features, self.missing.to(features.dtype).expand_as(features))
        h = self.map(x)
        return h, self.head(h)

    def forward(self, features: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from concatenated features; ``present`` defaults to every device present."""
        if present is None:
            present = torch.ones(features.shape[0], self.config.num_devices, dtype=torch.bool, device=features.device)
        return self.fuse(features, present)[1]

    def forward_available(self, available: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Logits from whichever devices answered: ``{device index: (B, width) feature}``.

        The devices not in ``available`` are marked missing. At least one must be present.
        """
        widths = self.config.feature_dims
        if not available:
            raise InvalidInput("fusion needs at least one device feature")
        bad = sorted(i for i in available if not isinstance(i, int) or not 0 <= i < len(widths))
        if bad:
            raise InvalidInput(f"unknown device index(es) {bad}; the fusion head has devices 0..{len(widths) - 1}")
        first = next(iter(available.values()))
        batch = first.shape[0]
        parts, present = [], torch.zeros(batch, len(widths), dtype=torch.bool)
        for i, width in enumerate(widths):
            f = available.get(i)
            if f is None:
                parts.append(first.new_zeros(batch, width))
                continue
            if f.shape != (batch, width):
                raise InvalidInput(f"device {i}: feature shape {tuple(f.shape)}, expected ({batch}, {width})")
            parts.append(f)
            present[:, i] = True
        return self.forward(torch.cat(parts, dim=1), present.to(first.device))


def fusion_input_names(num_devices: int) -> Sequence[str]:
    """Names of the fusion part's inputs in the bundle: one feature per device, then the mask."""
    return [*(f"feature_{i}" for i in range(num_devices)), "present"]
