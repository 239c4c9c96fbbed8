"""Shared building blocks: the U-Net and batched Poisson blending."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from swaplab.imaging import clone_center, seamless_clone, to_uint8
from swaplab.nets.layers import make_norm
from swaplab.nets.unet import StridedUNet, UNet


def test_classic_unet_size_and_shapes():
    # Ronneberger et al.'s layout (64..1024, 2 convs per level, transposed-conv up-sampling) has ~31.0M weights
    assert sum(p.numel() for p in UNet(3, 2).parameters()) == pytest.approx(31.03e6, rel=0.002)
    net = UNet(6, 3, widths=(8, 16, 32), upsample="bilinear", norm="instance")
    assert net(torch.randn(2, 6, 32, 32)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 6, 30, 32))


def test_strided_unet_has_the_public_hear_nets_five_down_samplings_weights_and_flops():
    """taotaonice/FaceShifter network/HEAR_Net.py: 6 -> 64, 128, 256, 512, 512 by 4x4 stride-2 convs (256 -> 8x8),
    16.663M weights of which 2432 conv biases (redundant before BatchNorm, left out here), 11.4 GFLOPs at 256."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net, x = StridedUNet(6, 3), torch.zeros(1, 6, 256, 256)
        sides = []
        for block in net.down:
            block.register_forward_hook(lambda m, i, out: sides.append(out.shape[-1]))
        with FlopCounterMode(display=False) as flops:
            y = net(x)
    assert sides == [128, 64, 32, 16, 8] and y.shape == (1, 3, 256, 256)
    assert sum(p.numel() for p in net.parameters()) + 2432 == 16_663_043
    assert flops.get_total_flops() / 1e9 == pytest.approx(11.39, abs=0.01)
    with pytest.raises(ValueError, match="divisible by 8"):
        StridedUNet(6, 3, widths=(8, 16, 32))(torch.zeros(1, 6, 20, 20))


def test_unet_skip_connections_carry_full_resolution_detail():
    """A 1-pixel impulse must influence the output at that pixel through the top-level skip."""
    torch.manual_seed(0)
    net = UNet(1, 1, widths=(4, 8, 8), norm="none").eval()
    x = torch.zeros(1, 1, 16, 16, requires_grad=True)
    net(x)[0, 0, 5, 9].backward()
    grad = x.grad[0, 0].abs()
    assert grad[5, 9] > 0 and grad[5, 9] >= grad.flatten().topk(20).values[-1]


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="norm must be one of"):
        make_norm("group", 4)
    with pytest.raises(ValueError, match="at least two levels"):
        UNet(3, 3, widths=(8,))
    with pytest.raises(ValueError, match="upsample"):
        UNet(3, 3, widths=(8, 16), upsample="nearest")


def _example(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    source, target = torch.rand(2, 2, 3, 40, 40, generator=g) * 2 - 1
    mask = torch.zeros(2, 1, 40, 40)
    mask[0, :, 10:25, 8:31] = 1
    mask[1, :, 5:30, 12:20] = 1
    return source, target, mask


def test_seamless_clone_equals_opencv_per_image():
    source, target, mask = _example()
    out = seamless_clone(source, target, mask)
    src, dst = to_uint8(source).numpy(), to_uint8(target).numpy()
    for i in range(2):
        m = (mask[i, 0].numpy() > 0.5).astype(np.uint8) * 255
        ys, xs = np.nonzero(m)
        center = (int(xs.min() + (xs.max() - xs.min() + 1) // 2), int(ys.min() + (ys.max() - ys.min() + 1) // 2))
        expected = cv2.seamlessClone(src[i], dst[i], m, center, cv2.NORMAL_CLONE)
        inside = mask[i, 0] > 0.5
        assert torch.equal(to_uint8(out[i])[inside], torch.from_numpy(expected)[inside])
        assert torch.equal(out[i][:, ~inside], target[i][:, ~inside])  # outside: the exact target values


def test_clone_center_pastes_in_place():
    """Cloning onto a flat image changes exactly the mask's interior: the region is not shifted."""
    source, _, mask = _example()
    flat = torch.zeros_like(source)
    out = seamless_clone(source, flat, mask)
    changed = (to_uint8(out).int() - to_uint8(flat).int()).abs().amax(-1) > 0
    for i in range(2):
        ys, xs = torch.nonzero(mask[i, 0], as_tuple=True)
        cy, cx = torch.nonzero(changed[i], as_tuple=True)
        assert (cy.min(), cy.max(), cx.min(), cx.max()) == (ys.min() + 1, ys.max() - 1, xs.min() + 1, xs.max() - 1)
    assert clone_center(np.zeros((4, 4))) is None


def test_empty_mask_and_bad_shapes():
    source, target, mask = _example()
    assert torch.equal(seamless_clone(source, target, torch.zeros_like(mask)), target)
    with pytest.raises(ValueError, match="mask must be"):
        seamless_clone(source, target, mask[:, :, :20])
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        seamless_clone(source[:, :1], target[:, :1], mask)
