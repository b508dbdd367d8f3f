"""The split interface every backbone implements: run the network up to a point, or from it.

A splittable network is five *stages* in a row. Split point ``p`` (0..5) sits in front of stage
``p``: point 0 is the raw input (upload the image, run nothing on the device), points 1..4 are
the four candidate layers of the backbone, and point 5 is after the last stage, whose output is
the logits (run everything on the device). So

    forward_tail(forward_head(x, p), p) == forward(x)   for every p.

A stage is described by a :class:`StageSpec`: the names of the model's parts it uses (module or
parameter paths, exactly as they appear in the model's state dict) and how to run them. Because
specs name parts instead of holding them, the same spec runs on the whole model or on a
:class:`Segment`, a small module that registers just those parts under the same names. A
segment's state dict is therefore the model's state dict restricted to that segment, and a head
or tail can be saved, shipped and loaded on its own (strictly) into ``build_model(config)
.segment(a, b)`` on another machine.

Shapes and MACs per point are found by running a twin of the model on the ``meta`` device,
which costs no arithmetic and never touches the live model (a server may be using it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.core.models._config import config_for_arch
from coinfer.core.models.macs import run_counting_macs

NUM_POINTS = 6
"""Split points of every backbone: input, four candidates, local."""
NUM_STAGES = NUM_POINTS - 1

RunFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StageSpec:
    """One stage: the model parts it uses and how it runs them."""

    parts: tuple[str, ...]
    """Qualified names of the sub-modules / parameters the stage owns, as in the model's state dict."""
    run: RunFn | None = None
    """``run(holder, x)`` computes the stage on any holder of those parts; None applies the parts in order."""

    def apply(self, holder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run this stage on ``holder`` (the whole model or a segment holding the parts)."""
        if self.run is not None:
            return self.run(holder, x)
        for name in self.parts:
            x = holder.get_submodule(name)(x)
        return x


class _Container(nn.Module):
    """A bare node that only exists to reproduce the model's names inside a segment."""


def _attach(holder: nn.Module, model: nn.Module, name: str) -> None:
    """Register ``model``'s part ``name`` on ``holder`` under the same qualified name (shared, not copied)."""
    parent_path, _, leaf = name.rpartition(".")
    source = model.get_submodule(parent_path) if parent_path else model
    target = holder
    for piece in parent_path.split(".") if parent_path else ():
        child = target._modules.get(piece)
        if child is None:
            child = _Container()
            target.add_module(piece, child)
        target = child
    if leaf in source._parameters:
        target.register_parameter(leaf, source._parameters[leaf])
    elif leaf in source._modules:
        target.add_module(leaf, source._modules[leaf])
    elif leaf in source._buffers:
        target.register_buffer(leaf, source._buffers[leaf])
    else:
        raise NotFound(f"{type(model).__name__} has no part named {name!r}")


class Segment(nn.Module):
    """Stages ``[start_point, end_point)`` of a model, sharing its parameters.

    Its state dict keys are the model's own keys for those parts, so it saves and loads on its
    own. ``forward`` maps the feature at ``start_point`` to the feature at ``end_point``.
    Load weights with the default ``assign=False``: values are then copied into the tensors the
    model shares, so the model sees them too.
    """

    def __init__(self, model: SplittableModel, start_point: int, end_point: int) -> None:
        super().__init__()
        self.start_point = start_point
        self.end_point = end_point
        self._specs = model.stage_specs[start_point:end_point]
        for spec in self._specs:
            for name in spec.parts:
                _attach(self, model, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for spec in self._specs:
            x = spec.apply(self, x)
        return x

    def extra_repr(self) -> str:
        return f"points {self.start_point}->{self.end_point}"


@dataclass(frozen=True)
class _Probe:
    """Per-point facts of one architecture, found once on the meta device."""

    shapes: tuple[tuple[int, ...], ...]
    """Feature shape at each point, batch dimension left out."""
    stage_macs: tuple[int, ...]
    """MACs of each stage for one image."""


class SplittableModel(nn.Module):
    """Base of every backbone in the zoo: a network of five stages with six split points.

    Subclasses set the class attributes ``arch`` and ``config_class``, keep their config in
    ``self.config`` (a frozen dataclass with ``in_chans`` and ``image_size``), and call
    :meth:`_init_split` with their six point names and five stage specs.
    """

    arch: ClassVar[str]
    """Registry name of the architecture (``build_model({"arch": ...})``)."""
    config_class: ClassVar[type]
    """Frozen dataclass holding every constructor setting."""

    config: Any
    point_names: tuple[str, ...]
    """Six names: ``"input"``, the four candidate layers, ``"local"``."""
    stage_specs: tuple[StageSpec, ...]
    """Five stages; stage ``i`` runs from point ``i`` to point ``i + 1``."""

    def _init_split(self, point_names: tuple[str, ...], stage_specs: tuple[StageSpec, ...]) -> None:
        if len(point_names) != NUM_POINTS or len(stage_specs) != NUM_STAGES:
            raise ValueError(  # a bug in a backbone definition, not a user error
                f"{type(self).__name__}: need {NUM_POINTS} point names and {NUM_STAGES} stages, "
                f"got {len(point_names)} and {len(stage_specs)}"
            )
        self.point_names = tuple(point_names)
        self.stage_specs = tuple(stage_specs)
        self._probe_cache: _Probe | None = None

    # Config ------------------------------------------------------------------------------

    @classmethod
    def from_config_dict(cls, values: Mapping[str, Any]) -> SplittableModel:
        """Build from a plain mapping of config fields (``"arch"`` may be present and must match)."""
        return cls(config_for_arch(cls.config_class, values, cls.arch))

    def config_dict(self) -> dict[str, Any]:
        """JSON-ready config; ``build_model(model.config_dict())`` builds the same architecture."""
        out: dict[str, Any] = {"arch": self.arch}
        for key, value in dataclasses.asdict(self.config).items():
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one input image."""
        return (self.config.in_chans, self.config.image_size, self.config.image_size)

    # Points ------------------------------------------------------------------------------

    @property
    def num_points(self) -> int:
        """Number of split points (6)."""
        return len(self.point_names)

    def point_index(self, point: int | str) -> int:
        """The index of a split point given by index or by name; bad points raise."""
        if isinstance(point, str):
            if point not in self.point_names:
                raise NotFound(f"{self.arch} has no split point {point!r}; points: {', '.join(self.point_names)}")
            return self.point_names.index(point)
        if isinstance(point, bool) or not isinstance(point, int) or not 0 <= point < self.num_points:
            raise InvalidInput(f"split point must be an index in 0..{self.num_points - 1} or a name, got {point!r}")
        return point

    # Running -----------------------------------------------------------------------------

    def _run(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        for spec in self.stage_specs[start:end]:
            x = spec.apply(self, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of images."""
        return self._run(x, 0, NUM_STAGES)

    def forward_head(self, x: torch.Tensor, point: int | str) -> torch.Tensor:
        """The feature at ``point`` (what a device uploads); point 0 returns ``x`` itself."""
        return self._run(x, 0, self.point_index(point))

    def forward_tail(self, feature: torch.Tensor, point: int | str) -> torch.Tensor:
        """Logits from the feature at ``point``; at the last point the feature already is the logits."""
        return self._run(feature, self.point_index(point), NUM_STAGES)

    @property
    def stages(self) -> nn.ModuleList:
        """The five stages as modules sharing this model's parameters (built on access)."""
        return nn.ModuleList(Segment(self, i, i + 1) for i in range(NUM_STAGES))

    def segment(self, start_point: int | str, end_point: int | str) -> Segment:
        """Stages from ``start_point`` to ``end_point`` as one module sharing this model's parameters."""
        start, end = self.point_index(start_point), self.point_index(end_point)
        if start > end:
            raise InvalidInput(f"segment start point {start} is after its end point {end}")
        return Segment(self, start, end)

    # Shapes and costs --------------------------------------------------------------------

    def _probe(self) -> _Probe:
        if self._probe_cache is None:
            # A twin on the meta device: only shapes flow, and the live model is never touched.
            with torch.device("meta"):
                twin = type(self)(self.config)
            twin.eval()
            x = torch.empty((1, *self.input_shape), device="meta")
            shapes, macs = [tuple(x.shape[1:])], []
            for i in range(NUM_STAGES):
                stage_macs, x = run_counting_macs(Segment(twin, i, i + 1), x)
                macs.append(stage_macs)
                shapes.append(tuple(x.shape[1:]))
            self._probe_cache = _Probe(shapes=tuple(shapes), stage_macs=tuple(macs))
        return self._probe_cache

    def feature_shape(self, point: int | str, batch: int = 1) -> tuple[int, ...]:
        """Shape of the feature at ``point`` for ``batch`` images (the logits at the last point)."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidInput(f"batch must be a positive integer, got {batch!r}")
        return (batch, *self._probe().shapes[self.point_index(point)])

    def head_macs(self, point: int | str) -> int:
        """MACs for one image of everything before ``point`` (0 at point 0, the whole net at point 5)."""
        return sum(self._probe().stage_macs[: self.point_index(point)])

    def macs(self, batch: int = 1) -> int:
        """MACs of one forward pass over ``batch`` images."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidInput(f"batch must be a positive integer, got {batch!r}")
        return batch * self.head_macs(NUM_POINTS - 1)

    def num_params(self) -> int:
        """Number of trainable and frozen parameters (shared ones counted once)."""
        return sum(p.numel() for p in self.parameters())
