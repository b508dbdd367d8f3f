"""A trained MAHPPO actor as a `Policy`: acting, saving and loading (safetensors + JSON).

The runtime's scheduler needs only this::

    policy = load_policy("runs/mahppo/policy.json")      # coinfer.rl.policy.load_policy
    action = policy.act(state)                           # JointAction(points, channels, powers_w)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from coinfer.core.errors import InvalidInput
from coinfer.rl.actions import JointAction, powers_from_unit, sample_categorical
from coinfer.rl.networks import Critic, Float64Copy, HybridActor
from coinfer.rl.policy_files import PolicySpec, check_compatible, read_policy_spec, read_policy_tensors, save_policy
from coinfer.rl.scenario import Scenario
from coinfer.rl.sim.core import feature_names

if TYPE_CHECKING:
    from coinfer.rl.mahppo import MahppoConfig


class MahppoPolicy:
    """Deterministic (mode and mean) or sampled actions of MAHPPO actors.

    Acting runs the actor on one state at a time in float64 and rounds its outputs to float32
    before choosing: a row's action then depends neither on the batch it came in nor on which
    kernels or how many threads computed it (a difference would have to cross a float32
    rounding boundary); ties between logits go to the lower index.
    """

    def __init__(
        self,
        actor: HybridActor,
        scenario: Scenario | None,
        config: "MahppoConfig | None" = None,
        name: str = "mahppo",
        spec: PolicySpec | None = None,
    ) -> None:
        self.actor, self.name, self.config = actor, name, config
        self.power_scale = config.power_scale if config is not None else (spec.power_scale if spec is not None else "linear")
        if scenario is not None:
            self.scenario_name = scenario.name
            self.feature_names = feature_names(scenario)
            self.power_low_w = np.array([d.power_range_w[0] for d in scenario.devices])
            self.power_high_w = np.array([d.power_range_w[1] for d in scenario.devices])
        elif spec is not None:
            self.scenario_name = spec.scenario
            self.feature_names = tuple(spec.feature_names)
            self.power_low_w, self.power_high_w = np.array(spec.power_low_w), np.array(spec.power_high_w)
        else:
            raise InvalidInput("a MAHPPO policy needs a scenario or a policy spec")
        self.num_devices = actor.num_devices
        self.state_dim = actor.num_devices * actor.num_features
        self._rng = np.random.default_rng()
        self._actor64 = Float64Copy(actor)

    def reset(self) -> None:
        pass

    def act(self, observation: np.ndarray, deterministic: bool = True, rngs: Sequence[np.random.Generator] | None = None) -> JointAction:
        obs = np.asarray(observation, dtype=np.float32)
        single = obs.ndim == 1
        if obs.shape[-1] != self.state_dim:
            raise InvalidInput(
                f"policy {self.name!r} expects global states of {self.state_dim} values "
                f"({self.num_devices} devices x {self.actor.num_features} features), got {obs.shape[-1]}"
            )
        rows = obs.reshape(-1, self.state_dim)
        if rngs is not None and len(rngs) != rows.shape[0]:
            raise InvalidInput(f"policy {self.name!r}: {len(rngs)} generators for {rows.shape[0]} states")
        (actor,) = self._actor64.get()
        N = self.num_devices
        points, channels, power_u = np.zeros((rows.shape[0], N), np.int64), np.zeros((rows.shape[0], N), np.int64), np.zeros((rows.shape[0], N))
        with torch.no_grad():
            for e, row in enumerate(rows):
                p = actor(torch.as_tensor(row, dtype=torch.float64)[None])
                point_logits, channel_logits = p.point_logits[0].float().numpy(), p.channel_logits[0].float().numpy()
                mean, std = p.power_mean[0].float().numpy().astype(float), p.power_std[0].float().numpy().astype(float)
                if deterministic:
                    points[e], channels[e], power_u[e] = point_logits.argmax(-1), channel_logits.argmax(-1), mean
                else:
                    rng = self._rng if rngs is None else rngs[e]
                    points[e], channels[e] = sample_categorical(point_logits, rng), sample_categorical(channel_logits, rng)
                    power_u[e] = mean + std * rng.standard_normal(N)
        powers = powers_from_unit(power_u, self.power_low_w, self.power_high_w, self.power_scale)
        action = JointAction(points, channels, powers)
        return action.env(0) if single else action

    # -----------------------------------------------------------------------------------------

    def spec(self) -> PolicySpec:
        from coinfer.rl.mahppo import config_to_dict

        a = self.actor
        return PolicySpec(
            algo="mahppo",
            scenario=self.scenario_name,
            num_devices=a.num_devices,
            num_points=a.num_points,
            num_subchannels=a.num_subchannels,
            feature_names=tuple(self.feature_names),
            power_low_w=tuple(float(v) for v in self.power_low_w),
            power_high_w=tuple(float(v) for v in self.power_high_w),
            share_actor=a.share,
            max_devices=a.max_devices if a.share else 0,
            actor_hidden=a.hidden,
            critic_hidden=tuple(self.config.critic_hidden) if self.config else (),
            power_scale=self.power_scale,
            activation=a.activation,
            extra={"train_config": config_to_dict(self.config)} if self.config else {},
        )

    def save(self, path: str | Path, critic: Critic | None = None) -> Path:
        """Write ``<path>.safetensors`` (actor, and critic if given) and ``<path>.json``."""
        tensors = {f"actor.{k}": v for k, v in self.actor.state_dict().items()}
        if critic is not None:
            tensors.update({f"critic.{k}": v for k, v in critic.state_dict().items()})
        return save_policy(path, self.spec(), tensors)

    @classmethod
    def load(cls, path: str | Path, scenario: Scenario | None = None) -> "MahppoPolicy":
        """Load a saved policy; with a scenario, refuse it unless it fits."""
        spec, json_path = read_policy_spec(path)
        if spec.algo != "mahppo":
            raise InvalidInput(f"{json_path}: not a MAHPPO policy (algo {spec.algo!r})")
        if scenario is not None:
            check_compatible(spec, scenario, str(json_path))
        num_devices = scenario.num_devices if scenario is not None else spec.num_devices
        actor = HybridActor(
            num_devices,
            len(spec.feature_names),
            spec.num_points,
            spec.num_subchannels,
            tuple(spec.actor_hidden),
            spec.share_actor,
            spec.max_devices or 16,
            spec.activation,
        )
        tensors = read_policy_tensors(json_path)
        state = {k[len("actor.") :]: v for k, v in tensors.items() if k.startswith("actor.")}
        try:
            actor.load_state_dict(state)
        except RuntimeError as exc:
            detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])
            raise InvalidInput(f"{json_path}: the weights do not fit the described actor ({detail})") from exc
        actor.eval()
        return cls(actor, scenario, None, name="mahppo", spec=spec)
