"""MAHPPO's networks and its hybrid action distribution.

Actors: one MLP per device run together as an ensemble (weights stacked on a leading axis, one
batched matmul per layer), each reading the global state; or one shared MLP reading a device's
local observation and a one-hot device id, so one policy serves any number of devices up to
``max_devices``. Every actor ends in three heads: split-point logits, sub-channel logits, and a
Gaussian over the normalised power u in [0, 1] (mean = sigmoid, std = softplus), clamped to
[0, 1] and mapped onto the device's power range when acting.

Critic: one MLP V(global state).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

MIN_POWER_STD = 1e-3
"""Floor on the power head's standard deviation (normalised units)."""


class EnsembleLinear(nn.Module):
    """``members`` independent linear layers applied at once: (M, B, in) -> (M, B, out)."""

    def __init__(self, members: int, in_features: int, out_features: int, gain: float = math.sqrt(2)) -> None:
        super().__init__()
        weight = torch.empty(members, in_features, out_features)
        for m in range(members):
            nn.init.orthogonal_(weight[m].T, gain=gain)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(members, 1, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}
"""Hidden-layer nonlinearities by name: ReLU by default, since on CPU tanh costs about as much as
the matmuls of these small layers; tanh is the paper's."""


class EnsembleMLP(nn.Module):
    """MLP made of `EnsembleLinear` layers, ``activation`` after each hidden layer, none after the last."""

    def __init__(
        self, members: int, in_features: int, hidden: tuple[int, ...], out_features: int, out_gain: float, activation: str = "relu"
    ) -> None:
        super().__init__()
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        sizes = (in_features, *hidden)
        self.hidden = nn.ModuleList(EnsembleLinear(members, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = EnsembleLinear(members, sizes[-1], out_features, gain=out_gain)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nonlinearity = ACTIVATIONS[self.activation]
        for layer in self.hidden:
            x = nonlinearity(layer(x))
        return self.out(x)


@dataclass
class HybridParams:
    """Distribution parameters of every device's hybrid action, each (B, N, ...)."""

    point_logits: torch.Tensor
    channel_logits: torch.Tensor
    power_mean: torch.Tensor
    """Mean of the normalised power u, in (0, 1)."""
    power_std: torch.Tensor


class HybridActor(nn.Module):
    """Every device's actor; ``forward(global_state (B, N*F)) -> HybridParams`` of shape (B, N, .)."""

    def __init__(
        self,
        num_devices: int,
        num_features: int,
        num_points: int,
        num_subchannels: int,
        hidden: tuple[int, ...] = (256, 128),
        share: bool = False,
        max_devices: int = 16,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.num_devices, self.num_features = num_devices, num_features
        self.num_points, self.num_subchannels = num_points, num_subchannels
        self.share, self.max_devices, self.hidden = share, max_devices, tuple(hidden)
        out = num_points + num_subchannels + 2
        if share:
            self.net = EnsembleMLP(1, 2 * num_features + max_devices, hidden, out, out_gain=0.01, activation=activation)
        else:
            self.net = EnsembleMLP(num_devices, num_devices * num_features, hidden, out, out_gain=0.01, activation=activation)

    @property
    def activation(self) -> str:
        return self.net.activation

    def forward(self, state: torch.Tensor) -> HybridParams:
        B, N = state.shape[0], self.num_devices
        if self.share:
            x = _shared_inputs(state, N, self.num_features, self.max_devices)  # (B, N, in)
            y = self.net(x.reshape(1, B * N, -1)).reshape(B, N, -1)
        else:
            y = self.net(state.unsqueeze(0).expand(N, B, state.shape[1])).transpose(0, 1)  # (B, N, out)
        P, K = self.num_points, self.num_subchannels
        return HybridParams(
            point_logits=y[..., :P],
            channel_logits=y[..., P : P + K],
            power_mean=torch.sigmoid(y[..., P + K]),
            power_std=nn.functional.softplus(y[..., P + K + 1] - 1.0) + MIN_POWER_STD,
        )


def _shared_inputs(state: torch.Tensor, num_devices: int, num_features: int, max_devices: int) -> torch.Tensor:
    """(B, N, 2F + max_devices): own features, the others' mean, and a one-hot device id."""
    f = state.reshape(state.shape[0], num_devices, num_features)
    others = (f.sum(dim=1, keepdim=True) - f) / max(num_devices - 1, 1)
    ids = torch.eye(max_devices, dtype=state.dtype, device=state.device)[:num_devices]
    return torch.cat([f, others, ids.expand(state.shape[0], -1, -1)], dim=-1)


class Critic(nn.Module):
    """V(global state) -> (B,)."""

    def __init__(self, state_dim: int, hidden: tuple[int, ...] = (256, 128, 64), activation: str = "relu") -> None:
        super().__init__()
        self.hidden = tuple(hidden)
        self.net = EnsembleMLP(1, state_dim, hidden, 1, out_gain=1.0, activation=activation)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state.unsqueeze(0))[0, :, 0]


# ---------------------------------------------------------------------------------------------
# The hybrid distribution: three components per device (point, channel, power).

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _log_softmax_last(logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits, dim=-1)`` computed with the classes on the leading axis.

    torch's CPU kernel is slow when the softmax axis is the last one and short (6 split points,
    2 sub-channels): 115 us forward for 256 x 5 x 6 logits, against 16 us with the classes first,
    the same values; forward and backward together 257 against 92 us.
    """
    return torch.log_softmax(logits.movedim(-1, 0), dim=0).movedim(0, -1)


def hybrid_log_prob(params: HybridParams, points: torch.Tensor, channels: torch.Tensor, power_u: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) log-probabilities of each component; ``power_u`` is the unclamped Gaussian sample."""
    lp_point = _log_softmax_last(params.point_logits).gather(-1, points.unsqueeze(-1)).squeeze(-1)
    lp_channel = _log_softmax_last(params.channel_logits).gather(-1, channels.unsqueeze(-1)).squeeze(-1)
    z = (power_u - params.power_mean) / params.power_std
    lp_power = -0.5 * z * z - torch.log(params.power_std) - _LOG_SQRT_2PI
    return torch.stack([lp_point, lp_channel, lp_power], dim=-1)


def hybrid_entropy(params: HybridParams) -> torch.Tensor:
    """(B, N, 3) entropy of each component."""

    def categorical(logits: torch.Tensor) -> torch.Tensor:
        logp = _log_softmax_last(logits)
        return -(logp.exp() * logp).sum(-1)

    gaussian = 0.5 + _LOG_SQRT_2PI + torch.log(params.power_std)
    return torch.stack([categorical(params.point_logits), categorical(params.channel_logits), gaussian], dim=-1)


def hybrid_sample(params: HybridParams, deterministic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points, channels and unclamped normalised powers (B, N); modes and means when deterministic."""
    if deterministic:
        return params.point_logits.argmax(-1), params.channel_logits.argmax(-1), params.power_mean
    points = torch.multinomial(torch.softmax(params.point_logits.reshape(-1, params.point_logits.shape[-1]), -1), 1)
    channels = torch.multinomial(torch.softmax(params.channel_logits.reshape(-1, params.channel_logits.shape[-1]), -1), 1)
    power_u = params.power_mean + params.power_std * torch.randn_like(params.power_mean)
    shape = params.power_mean.shape
    return points.reshape(shape), channels.reshape(shape), power_u


class Float64Copy:
    """Float64 copies of some modules (what acting per row runs), made again whenever their weights change.

    Changes are found by content, not by tensors' version counters: torch's fused Adam updates
    parameters in place without bumping them, and a copy kept by version went on acting with the
    initial weights through a whole training run.
    """

    def __init__(self, *modules: nn.Module) -> None:
        self.modules = modules
        self._copies: tuple[nn.Module, ...] | None = None
        self._seen: list[torch.Tensor] = []

    def get(self) -> tuple[nn.Module, ...]:
        params = [p.detach() for m in self.modules for p in (*m.parameters(), *m.buffers())]
        if self._copies is None or any(not torch.equal(p, q) for p, q in zip(params, self._seen)):
            self._copies = tuple(copy.deepcopy(m).double().eval() for m in self.modules)
            self._seen = [p.clone() for p in params]
        return self._copies
