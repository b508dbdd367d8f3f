import numpy as np
import pytest
import torch

from coinfer.core.errors import InvalidInput
from coinfer.core.models.vit import VisionTransformer
from coinfer.server.dekd.prune import (
    PrunePlan,
    architecture_cost,
    build_pruned_vit,
    plan_cost,
    plan_pruning,
    unit_importance,
)

from dekd_configs import tiny_vit_config


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(1)
    return VisionTransformer(tiny_vit_config(depth=3, embed_dim=32, num_heads=4)).eval()


@pytest.fixture(scope="module")
def importance(teacher):
    torch.manual_seed(2)
    x, y = torch.rand(96, 1, 8, 8), torch.randint(0, 3, (96,))
    return unit_importance(teacher, x, y, classes=[2, 5, 7], batch_size=32)


def _masked_teacher_logits(teacher, x, plan):
    """The teacher with every unit outside ``plan`` gated to zero (all blocks kept)."""
    cfg = teacher.config
    hd = cfg.resolved_head_dim
    hooks = []
    for b, blk in enumerate(teacher.blocks):
        slot = plan.blocks.index(b)
        head_gate = torch.zeros(cfg.num_heads * hd)
        for h in plan.heads[slot]:
            head_gate[h * hd : (h + 1) * hd] = 1
        neuron_gate = torch.zeros(cfg.mlp_hidden(b))
        neuron_gate[list(plan.neurons[slot])] = 1
        hooks.append(blk.attn.proj.register_forward_pre_hook(lambda m, i, g=head_gate: (i[0] * g,)))
        hooks.append(blk.mlp.act.register_forward_hook(lambda m, i, o, g=neuron_gate: o * g))
    try:
        with torch.no_grad():
            return teacher(x)
    finally:
        for h in hooks:
            h.remove()


def test_a_pruned_model_computes_exactly_the_masked_teacher(teacher):
    plan = PrunePlan((0, 1, 2), ((1, 3), (0,), (0, 1, 2, 3)), ((0, 5, 9), (), tuple(range(0, 128, 2))))
    model = build_pruned_vit(teacher, plan, classes=[7, 2])
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        got = model(x)
    want = _masked_teacher_logits(teacher, x, plan)[:, [7, 2]]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert model.config.block_heads == (2, 1, 4) and model.config.block_mlp_hidden == (3, 0, 64)
    assert plan_cost(teacher.config, plan, "macs", 2) == model.macs()
    assert plan_cost(teacher.config, plan, "params", 2) == model.num_params()


def test_a_pruned_model_keeps_the_teachers_conv_stem_whole():
    torch.manual_seed(3)
    stemmed = VisionTransformer(tiny_vit_config(depth=2, embed_dim=32, num_heads=4, stem_channels=(8, 12)))
    with torch.no_grad():  # batch-norm statistics a trained stem would have, not the identity ones
        for bn in (stemmed.patch_embed.stem[1], stemmed.patch_embed.stem[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    stemmed.eval()
    plan = PrunePlan((0, 1), ((1, 3), (0, 2)), ((0, 5, 9), tuple(range(0, 128, 3))))
    model = build_pruned_vit(stemmed, plan)
    for name, value in stemmed.state_dict().items():
        if name.startswith("patch_embed."):
            assert torch.equal(model.state_dict()[name], value), name
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _masked_teacher_logits(stemmed, x, plan), rtol=1e-5, atol=1e-5)
    assert plan_cost(stemmed.config, plan, "macs", 10) == model.macs()


def test_importance_has_a_score_per_unit_and_block(teacher, importance):
    cfg = teacher.config
    assert importance.heads.shape == (cfg.depth, cfg.num_heads)
    assert [len(n) for n in importance.neurons] == [cfg.mlp_hidden(i) for i in range(cfg.depth)]
    assert importance.blocks.shape == (cfg.depth,)
    assert (importance.heads >= 0).all() and importance.heads.sum() > 0


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.6])
@pytest.mark.parametrize("kind", ["macs", "params"])
def test_plans_fit_their_budget_closely(teacher, importance, ratio, kind):
    full = architecture_cost(teacher.config, kind)
    plan = plan_pruning(teacher.config, importance, ratio * full, kind=kind, num_classes=teacher.config.num_classes)
    cost = plan_cost(teacher.config, plan, kind, teacher.config.num_classes)
    assert cost <= ratio * full
    assert cost >= 0.85 * ratio * full  # the greedy fills the budget, it does not stop early
    assert all(len(h) >= 1 for h in plan.heads)  # every kept block keeps a head


def test_the_most_important_units_are_kept(teacher, importance):
    plan = plan_pruning(teacher.config, importance, 0.5 * architecture_cost(teacher.config, "macs"), depth=3)
    for slot, b in enumerate(plan.blocks):
        kept = np.array(plan.neurons[slot], dtype=int)
        dropped = np.setdiff1d(np.arange(len(importance.neurons[b])), kept)
        if len(kept) and len(dropped):
            assert importance.neurons[b][kept].min() >= importance.neurons[b][dropped].max()


def test_depth_shrinks_with_the_budget_and_drops_the_least_important_blocks(teacher, importance):
    full = architecture_cost(teacher.config, "macs")
    deep = plan_pruning(teacher.config, importance, 0.9 * full)
    shallow = plan_pruning(teacher.config, importance, 0.1 * full)
    assert len(shallow.blocks) < len(deep.blocks)
    assert shallow.blocks == tuple(sorted(np.argsort(-importance.blocks)[: len(shallow.blocks)].tolist()))
    with pytest.raises(InvalidInput, match="budget"):
        plan_pruning(teacher.config, importance, 0)
