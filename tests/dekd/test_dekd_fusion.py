import pytest
import torch

from coinfer.core.errors import InvalidInput
from coinfer.core.models import build_model
from coinfer.core.models.fusion import ARCH, DeViTFusion, FusionConfig


@pytest.fixture
def fusion():
    torch.manual_seed(0)
    f = DeViTFusion(FusionConfig((4, 6, 5), embed_dim=8, num_classes=3))
    with torch.no_grad():
        f.missing.normal_()
    return f.eval()


def test_shapes_and_rebuild_from_config(fusion):
    x = torch.randn(2, 15)
    h, logits = fusion.fuse(x, torch.ones(2, 3, dtype=torch.bool))
    assert h.shape == (2, 8) and logits.shape == (2, 3)
    config = fusion.config_dict()
    assert config["arch"] == ARCH and config["feature_dims"] == [4, 6, 5]
    again = build_model(config)
    again.load_state_dict(fusion.state_dict(), strict=True)
    torch.testing.assert_close(again(x), fusion(x))
    assert fusion.macs() == 15 * 8 + 8 * 3


def test_a_missing_feature_is_replaced_by_its_learned_embedding_not_read(fusion):
    x = torch.randn(2, 15)
    present = torch.tensor([[True, False, True], [True, False, True]])
    garbage = x.clone()
    garbage[:, 4:10] = 1e6
    torch.testing.assert_close(fusion(x, present), fusion(garbage, present))
    # and it is not the same as feeding zeros for the missing device
    zeros = x.clone()
    zeros[:, 4:10] = 0
    assert not torch.allclose(fusion(x, present), fusion(zeros))
    # the missing device's slice is the learned embedding
    stand_in = x.clone()
    stand_in[:, 4:10] = fusion.missing[4:10]
    torch.testing.assert_close(fusion(x, present), fusion(stand_in))


def test_forward_available_equals_the_masked_forward(fusion):
    feats = {0: torch.randn(3, 4), 2: torch.randn(3, 5)}
    full = torch.cat([feats[0], torch.zeros(3, 6), feats[2]], dim=1)
    present = torch.tensor([[True, False, True]] * 3)
    torch.testing.assert_close(fusion.forward_available(feats), fusion(full, present))
    with pytest.raises(InvalidInput, match="unknown device"):
        fusion.forward_available({5: torch.randn(3, 4)})
    with pytest.raises(InvalidInput, match="expected"):
        fusion.forward_available({0: torch.randn(3, 7)})
    with pytest.raises(InvalidInput, match="at least one"):
        fusion.forward_available({})


@pytest.mark.parametrize(
    "config",
    [
        {"arch": ARCH, "feature_dims": [4], "embed_dim": 8, "num_classes": 3},
        {"arch": ARCH, "feature_dims": [4, 0], "embed_dim": 8, "num_classes": 3},
        {"arch": ARCH, "feature_dims": [4, 4], "embed_dim": 8},
        {"arch": "vit", "feature_dims": [4, 4], "embed_dim": 8, "num_classes": 3},
        {"arch": ARCH, "feature_dims": [4, 4], "embed_dim": 8, "num_classes": 3, "extra": 1},
    ],
)
def test_bad_configs_are_refused_by_name(config):
    with pytest.raises(InvalidInput):
        build_model(config)
