"""Loss terms on inputs with known answers, and the config-driven weighted sum."""

from __future__ import annotations

import math

import pytest
import torch

from swaplab.losses import (
    AdversarialLoss,
    IdentityLoss,
    MultiLevelFeatureLoss,
    ReconstructionLoss,
    WeightedSum,
)


def test_weighted_sum_total_and_logs():
    weighted = WeightedSum({"a": 2.0, "b": 0.5, "c": 0.0}, ["a", "b", "c"], "m")
    total, logs = weighted({"a": torch.tensor(1.0), "b": torch.tensor(4.0), "c": torch.tensor(100.0)})
    assert total.item() == pytest.approx(4.0)
    assert logs["c"].item() == 100.0 and logs["total"].item() == pytest.approx(4.0)
    assert "share_a" not in logs
    weighted.shares = True
    _, logs = weighted({"a": torch.tensor(1.0), "b": torch.tensor(4.0), "c": torch.tensor(100.0)})
    assert {k: v.item() for k, v in logs.items() if k.startswith("share_")} == {"share_a": 0.5, "share_b": 0.5}


@pytest.mark.parametrize(("weights", "message"), [
    ({"a": 1.0}, "missing: \\['b'\\]"),
    ({"a": 1.0, "b": 1.0, "x": 1.0}, "unknown: \\['x'\\]"),
    ({"a": 1.0, "b": -1.0}, "non-negative"),
])
def test_weighted_sum_rejects_bad_weight_maps(weights, message):
    with pytest.raises(ValueError, match=message):
        WeightedSum(weights, ["a", "b"], "m")


def test_hinge_loss_values():
    loss = AdversarialLoss("hinge")
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    d = loss.discriminator(real, fake)
    assert d["real"].item() == pytest.approx((0 + 1) / 2)
    assert d["fake"].item() == pytest.approx((0 + 1.5) / 2)
    assert loss.generator(fake).item() == pytest.approx(0.75)


def test_lsgan_and_nonsaturating_values_and_scale_average():
    lsgan = AdversarialLoss("lsgan")
    assert lsgan.generator([torch.zeros(4), torch.ones(4)]).item() == pytest.approx(0.5)
    ns = AdversarialLoss("nonsaturating")
    d = ns.discriminator(torch.zeros(3), torch.zeros(3))
    assert d["real"].item() == pytest.approx(math.log(2)) and d["fake"].item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="must be one of"):
        AdversarialLoss("wgan")


def test_reconstruction_only_on_flagged_pairs():
    result, target = torch.zeros(3, 3, 4, 4), torch.zeros(3, 3, 4, 4)
    result[1] = 2.0
    result[2] = 1.0
    where = torch.tensor([False, False, True])
    assert ReconstructionLoss("half_l2")(result, target, where).item() == pytest.approx(0.5)
    assert ReconstructionLoss("l1")(result, target, where).item() == pytest.approx(1.0)
    assert ReconstructionLoss("l1")(result, target).item() == pytest.approx(1.0)
    assert ReconstructionLoss("l1")(result, target, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_identity_loss_is_one_minus_cosine():
    z = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert IdentityLoss()(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert IdentityLoss()(z, -z).item() == pytest.approx(2.0, abs=1e-6)


def test_multilevel_feature_loss():
    a = [torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 4, 4)]
    b = [torch.ones(1, 2, 2, 2), torch.full((1, 1, 4, 4), 2.0)]
    assert MultiLevelFeatureLoss()(a, b).item() == pytest.approx(0.5 * (1 + 4))
