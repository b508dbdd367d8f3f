import numpy as np
import pytest

from coinfer.core.errors import InvalidInput
from coinfer.server.dekd.prune import UnitImportance, architecture_cost, plan_cost, plan_pruning
from coinfer.server.dekd.sizing import size_submodels

from dekd_configs import tiny_vit_config


def _importance(cfg, seed):
    rng = np.random.default_rng(seed)
    return UnitImportance(
        heads=rng.uniform(size=(cfg.depth, cfg.num_heads)),
        neurons=[rng.uniform(size=cfg.mlp_hidden(i)) for i in range(cfg.depth)],
        blocks=rng.uniform(size=cfg.depth),
    )


def _fake_latency(cfg):
    """A batch-1 latency model with a fixed part per block, like a real CPU: 0.1 ms + 0.05 ms/block + MACs."""
    return 0.1 + 0.05 * cfg.depth + architecture_cost(cfg, "macs") / 2e6


def test_equal_speeds_give_equal_budgets_and_no_measurement():
    cfg = tiny_vit_config(depth=6, embed_dim=64, num_heads=4, patch_size=2)
    calls = []
    out = size_submodels(cfg, [_importance(cfg, i) for i in range(3)], [2.0, 2.0, 2.0], 0.2, latency_fn=lambda c: calls.append(c) or 1.0)
    assert not calls
    assert len({b.macs_budget for b in out}) == 1
    full = architecture_cost(cfg, "macs")
    assert all(plan_cost(cfg, b.plan, "macs") <= 0.2 * full for b in out)


def test_slower_devices_get_sub_models_whose_scaled_latency_matches_the_fastest():
    cfg = tiny_vit_config(depth=6, embed_dim=64, num_heads=4, patch_size=2)
    speeds = [1.0, 1.0, 0.5, 0.5]
    out = size_submodels(cfg, [_importance(cfg, i) for i in range(4)], speeds, 0.3, latency_fn=_fake_latency)
    scaled = [_fake_latency(b.plan.config(cfg, 0)) / s for b, s in zip(out, speeds)]
    assert max(scaled) / min(scaled) <= 1.2
    assert out[2].macs_budget < out[0].macs_budget
    # MAC-proportional sizing balances worse: the fixed part of the latency does not halve
    proportional = plan_pruning(cfg, _importance(cfg, 2), 0.5 * out[0].macs_budget)
    naive = (_fake_latency(proportional.config(cfg, 0)) / 0.5) / (_fake_latency(out[0].plan.config(cfg, 0)))
    assert naive > max(scaled) / min(scaled)


def test_bad_ratios_and_speeds_are_refused():
    cfg = tiny_vit_config()
    imps = [_importance(cfg, 0), _importance(cfg, 1)]
    with pytest.raises(InvalidInput, match="macs_ratio"):
        size_submodels(cfg, imps, [1, 1], 0)
    with pytest.raises(InvalidInput, match="speeds"):
        size_submodels(cfg, imps, [1, -1], 0.5)
