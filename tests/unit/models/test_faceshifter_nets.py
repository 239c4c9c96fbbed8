"""AEI-Net structure and behaviour: the paper's layout, AAD gating, identity conditioning, EMA."""

from __future__ import annotations

import pytest
import torch

from swaplab.models.faceshifter import AEINet
from swaplab.models.faceshifter.aei_net import attribute_channels
from swaplab.nets.aad import AADLayer
from swaplab.nets.discriminators import MultiScaleDiscriminator


def test_paper_attribute_layout():
    # FaceShifter Fig. 4: z_att^1..8 = 1024@2, 2048@4, 1024@8, 512@16, 256@32, 128@64, 64@128, 64@256
    assert attribute_channels(256, 32, 1024) == [1024, 2048, 1024, 512, 256, 128, 64, 64]


def test_tiny_aei_net_shapes_and_range():
    net = AEINet(resolution=32, base_channels=8, max_channels=32)
    target, z_id = torch.randn(2, 3, 32, 32), torch.nn.functional.normalize(torch.randn(2, 512), dim=-1)
    swap, z_att = net(target, z_id)
    assert swap.shape == (2, 3, 32, 32) and swap.abs().max() <= 1
    assert [t.shape[1] for t in z_att] == attribute_channels(32, 8, 32)
    assert [t.shape[-1] for t in z_att] == [2, 4, 8, 16, 32]
    with pytest.raises(ValueError, match="built for 32px"):
        net(torch.randn(1, 3, 64, 64), z_id[:1])
    with pytest.raises(ValueError, match="power of two"):
        AEINet(resolution=48)


def test_identity_conditioning_changes_the_swap():
    net = AEINet(resolution=32, base_channels=8, max_channels=32).eval()
    target = torch.randn(1, 3, 32, 32)
    a, _ = net(target, torch.nn.functional.normalize(torch.randn(1, 512), dim=-1))
    b, _ = net(target, torch.nn.functional.normalize(torch.randn(1, 512), dim=-1))
    assert (a - b).abs().mean() > 1e-3


def test_aad_mask_selects_identity_or_attributes():
    layer = AADLayer(4, 3, 8)
    h, z_att, z_id = torch.randn(2, 4, 5, 5), torch.randn(2, 3, 5, 5), torch.randn(2, 8)
    normed = layer.norm(h)
    identity_branch = layer.id_gamma(z_id)[..., None, None] * normed + layer.id_beta(z_id)[..., None, None]
    attribute_branch = layer.attr_gamma(z_att) * normed + layer.attr_beta(z_att)
    with torch.no_grad():
        layer.mask.weight.zero_()
        layer.mask.bias.fill_(50.0)
        assert torch.allclose(layer(h, z_att, z_id), identity_branch, atol=1e-5)
        layer.mask.bias.fill_(-50.0)
        assert torch.allclose(layer(h, z_att, z_id), attribute_branch, atol=1e-5)


def test_multiscale_discriminator_scales():
    disc = MultiScaleDiscriminator(num_scales=3, base_channels=8, num_layers=2, max_channels=16)
    logits = disc(torch.randn(2, 3, 64, 64))
    assert len(logits) == 3
    assert logits[0].shape[-1] > logits[1].shape[-1] > logits[2].shape[-1]
