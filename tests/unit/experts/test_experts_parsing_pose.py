"""BiSeNet face parsing and Hopenet head pose: official key layouts, loading through the registry, reference
computations written independently of the experts, and known answers for the mask groups and angle bins."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from swaplab.experts.head_pose import HeadPose, angles_from_logits
from swaplab.experts.parsing import FaceParser
from swaplab.faces.parsing import CELEBAMASK_CLASSES, DEFAULT_GROUPS

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


# ---------------------------------------------------------------- BiSeNet official layout (face-parsing.PyTorch)
def _bn(prefix: str, c: int) -> dict[str, tuple]:
    return {f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


def _conv(prefix: str, out_ch: int, in_ch: int, k: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (out_ch, in_ch, k, k)}


def _cbr(prefix: str, in_ch: int, out_ch: int, k: int) -> dict[str, tuple]:  # ConvBNReLU: conv + bn
    return _conv(f"{prefix}.conv", out_ch, in_ch, k) | _bn(f"{prefix}.bn", out_ch)


def official_bisenet_shapes(n_classes: int = 19) -> dict[str, tuple]:
    """Keys and shapes of `BiSeNet(19).state_dict()` from model.py / resnet.py of face-parsing.PyTorch."""
    shapes = _conv("cp.resnet.conv1", 64, 3, 7) | _bn("cp.resnet.bn1", 64)
    for i, (cin, cout, stride) in enumerate([(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)], 1):
        for b in range(2):  # create_layer_basic(bnum=2)
            p, c_in = f"cp.resnet.layer{i}.{b}", cin if b == 0 else cout
            shapes |= _conv(f"{p}.conv1", cout, c_in, 3) | _bn(f"{p}.bn1", cout)
            shapes |= _conv(f"{p}.conv2", cout, cout, 3) | _bn(f"{p}.bn2", cout)
            if b == 0 and (cin != cout or stride != 1):
                shapes |= _conv(f"{p}.downsample.0", cout, cin, 1) | _bn(f"{p}.downsample.1", cout)
    for name, cin in (("arm16", 256), ("arm32", 512)):
        shapes |= _cbr(f"cp.{name}.conv", cin, 128, 3) | _conv(f"cp.{name}.conv_atten", 128, 128, 1)
        shapes |= _bn(f"cp.{name}.bn_atten", 128)
    shapes |= _cbr("cp.conv_head32", 128, 128, 3) | _cbr("cp.conv_head16", 128, 128, 3)
    shapes |= _cbr("cp.conv_avg", 512, 128, 1)
    shapes |= _cbr("ffm.convblk", 256, 256, 1) | _conv("ffm.conv1", 64, 256, 1) | _conv("ffm.conv2", 256, 64, 1)
    for name, cin, mid in (("conv_out", 256, 256), ("conv_out16", 128, 64), ("conv_out32", 128, 64)):
        shapes |= _cbr(f"{name}.conv", cin, mid, 3) | _conv(f"{name}.conv_out", n_classes, mid, 1)
    return shapes


def random_state(shapes: dict[str, tuple], generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith(("bn.weight", "bn1.weight", "bn2.weight", "bn_atten.weight", "downsample.1.weight")):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 10
            state[key] = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
    return state


def reference_bisenet(s: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The official BiSeNet forward (main output) written functionally on the state dict."""
    def bn(v, p):
        return F.batch_norm(v, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"],
                            False, 0.0, 1e-5)

    def cbr(v, p, stride=1):
        w = s[f"{p}.conv.weight"]
        return F.relu(bn(F.conv2d(v, w, stride=stride, padding=w.shape[-1] // 2), f"{p}.bn"))

    def block(v, p, stride):
        r = F.relu(bn(F.conv2d(v, s[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
        r = bn(F.conv2d(r, s[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
        if f"{p}.downsample.0.weight" in s:
            v = bn(F.conv2d(v, s[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
        return F.relu(v + r)

    def arm(v, p):
        feat = cbr(v, f"{p}.conv")
        att = bn(F.conv2d(F.avg_pool2d(feat, feat.shape[2:]), s[f"{p}.conv_atten.weight"]), f"{p}.bn_atten")
        return feat * torch.sigmoid(att)

    h = F.relu(bn(F.conv2d(x, s["cp.resnet.conv1.weight"], stride=2, padding=3), "cp.resnet.bn1"))
    h = F.max_pool2d(h, 3, 2, 1)
    feats = []
    for i, stride in enumerate((1, 2, 2, 2), 1):
        h = block(block(h, f"cp.resnet.layer{i}.0", stride), f"cp.resnet.layer{i}.1", 1)
        feats.append(h)
    f8, f16, f32 = feats[1:]
    avg = F.interpolate(cbr(F.avg_pool2d(f32, f32.shape[2:]), "cp.conv_avg"), f32.shape[2:], mode="nearest")
    up32 = cbr(F.interpolate(arm(f32, "cp.arm32") + avg, f16.shape[2:], mode="nearest"), "cp.conv_head32")
    up16 = cbr(F.interpolate(arm(f16, "cp.arm16") + up32, f8.shape[2:], mode="nearest"), "cp.conv_head16")
    fuse = cbr(torch.cat([f8, up16], 1), "ffm.convblk")
    att = torch.sigmoid(F.conv2d(F.relu(F.conv2d(F.avg_pool2d(fuse, fuse.shape[2:]), s["ffm.conv1.weight"])),
                                 s["ffm.conv2.weight"]))
    out = F.conv2d(cbr(fuse * att + fuse, "conv_out.conv"), s["conv_out.conv_out.weight"])
    return F.interpolate(out, x.shape[2:], mode="bilinear", align_corners=True)


@pytest.fixture(scope="module")
def bisenet_file(tmp_path_factory):
    state = random_state(official_bisenet_shapes(), torch.Generator().manual_seed(1))
    path = tmp_path_factory.mktemp("bisenet") / "79999_iter.pth"
    torch.save(state, path)
    return path, state


def test_bisenet_state_dict_has_the_official_keys_and_shapes():
    net = FaceParser.build(input_size=64).net
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    official = official_bisenet_shapes()
    assert sorted(ours) == sorted(official)
    assert ours == official


def test_bisenet_loads_the_official_file_and_matches_the_reference(bisenet_file):
    path, state = bisenet_file
    parser = FaceParser.build(weights="pretrained", path=str(path), input_size=96)
    assert parser.weights == str(path)
    for key, value in parser.net.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = torch.rand(2, 3, 96, 96) * 2 - 1
    logits = parser(x)
    assert logits.shape == (2, 19, 96, 96) and logits.grad_fn is None
    with torch.no_grad():
        expected = reference_bisenet(state, ((x + 1) / 2 - MEAN) / STD)
    assert torch.allclose(logits, expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    assert torch.equal(parser.labels(x), expected.argmax(1))


def test_parser_output_size_crop_and_partition(bisenet_file):
    path, _ = bisenet_file
    parser = FaceParser.build(weights="pretrained", path=str(path), input_size=64, crop=(0.25, 0.75))
    x = torch.rand(3, 3, 80, 80) * 2 - 1
    masks = parser.masks(x)
    assert list(masks) == ["background", "face", "hair"]
    assert all(m.shape == (3, 1, 80, 80) for m in masks.values())
    total = sum(masks.values())
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    assert torch.all(masks["background"][..., :20, :] > 0.999)  # outside the box
    assert torch.all(masks["background"][..., :, 60:] > 0.999)
    hard = parser.masks(x, hard=True)
    assert torch.equal(sum(hard.values()), torch.ones(3, 1, 80, 80))
    labels = parser.group_labels(x)
    assert labels.shape == (3, 80, 80)
    assert torch.equal(F.one_hot(labels, 3).permute(0, 3, 1, 2).float(),
                       torch.cat([hard["background"], hard["face"], hard["hair"]], 1))


def test_group_mapping_with_hand_made_logits():
    parser = FaceParser.build(input_size=32)
    classes = torch.arange(19).view(1, 1, 19)  # one pixel per class, in a 1 x 19 image
    logits = F.one_hot(classes, 19).permute(0, 3, 1, 2).float() * 30.0
    soft = parser.group_masks(logits)
    hard = parser.group_masks(logits, hard=True)
    assert torch.allclose(soft, hard, atol=1e-6)
    for g, name in enumerate(parser.group_names):
        members = {CELEBAMASK_CLASSES[c] for c in range(19) if hard[0, g, 0, c] == 1}
        assert members == set(DEFAULT_GROUPS[name])
    # a pixel torn between skin and hair gives half face, half hair
    tied = torch.full((1, 19, 1, 1), -30.0)
    tied[0, CELEBAMASK_CLASSES.index("skin")] = tied[0, CELEBAMASK_CLASSES.index("hair")] = 5.0
    assert torch.allclose(parser.group_masks(tied)[0, :, 0, 0], torch.tensor([0.0, 0.5, 0.5]), atol=1e-6)


def test_custom_groups_rest_and_errors():
    parser = FaceParser.build(input_size=32, groups={"face": ["skin", "nose", "l_ear", "r_ear"], "hair": [17]},
                              rest="other")
    assert parser.group_names == ("face", "hair", "other")
    assert parser.class_to_group.sum(0).eq(1).all()
    assert parser.class_to_group[0, CELEBAMASK_CLASSES.index("l_ear")] == 1
    assert parser.class_to_group[2, CELEBAMASK_CLASSES.index("l_eye")] == 1
    with pytest.raises(ValueError, match="more than one group"):
        FaceParser.build(input_size=32, groups={"a": ["skin"], "b": ["skin"]})
    with pytest.raises(ValueError, match="in no group"):
        FaceParser.build(input_size=32, groups={"a": ["skin"]}, rest=None)
    with pytest.raises(ValueError, match="unknown parsing class"):
        FaceParser.build(input_size=32, groups={"a": ["beard"]})


def test_soft_masks_pass_gradients_to_the_images():
    parser = FaceParser.build(input_size=64)
    x = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)
    parser.masks(x)["face"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in parser.net.parameters())
    assert "class_to_group" not in parser.state_dict()


# ------------------------------------------------------------------------------------------ Hopenet
def _hopenet_reference(generator: torch.Generator, layers=(3, 4, 6, 3)):
    backbone = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, list(layers)).eval()
    for m in backbone.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=generator)
            m.running_var.uniform_(0.5, 1.5, generator=generator)
            m.weight.data.uniform_(0.2, 0.5, generator=generator)
    backbone.fc = nn.Identity()
    heads = {n: nn.Linear(2048, 66) for n in ("fc_yaw", "fc_pitch", "fc_roll")}
    for head in heads.values():
        head.weight.data.normal_(0, 0.05, generator=generator)
    finetune = nn.Linear(2051, 3)
    state = {k: v for k, v in backbone.state_dict().items()}
    for name, module in (*heads.items(), ("fc_finetune", finetune)):
        state |= {f"{name}.{k}": v for k, v in module.state_dict().items()}
    return backbone, heads, state


def test_hopenet_loads_the_official_layout_and_matches_torchvision(tmp_path):
    backbone, heads, state = _hopenet_reference(torch.Generator().manual_seed(3))
    assert {k for k in state if not k.startswith(("layer", "conv1", "bn1"))} == {
        f"{h}.{p}" for h in ("fc_yaw", "fc_pitch", "fc_roll", "fc_finetune") for p in ("weight", "bias")}
    path = tmp_path / "hopenet_robust_alpha1.pkl"
    torch.save(state, path)
    pose = HeadPose.build(weights="pretrained", path=str(path), input_size=128)  # 224 officially; CPU time
    assert pose.weights == str(path)
    assert {k: v.shape for k, v in pose.net.state_dict().items()} == {k: v.shape for k, v in state.items()}
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    angles = pose(x)
    with torch.no_grad():
        feat = backbone(((x + 1) / 2 - MEAN) / STD)
        idx = torch.arange(66, dtype=torch.float32)
        expected = torch.stack([(heads[h](feat).softmax(1) * idx).sum(1) * 3 - 99
                                for h in ("fc_yaw", "fc_pitch", "fc_roll")], dim=1)
    assert angles.shape == (2, 3)
    assert torch.allclose(angles, expected, atol=1e-3)
    assert angles.min() >= -99 and angles.max() <= 99
    assert expected.std() > 0.1  # the comparison is not between constants


def test_hopenet_loads_a_legacy_file_without_batchnorm_counters(tmp_path):
    _, _, state = _hopenet_reference(torch.Generator().manual_seed(4), layers=(1, 1, 1, 1))
    legacy = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # pre-0.4 PyTorch file
    path = tmp_path / "hopenet_robust_alpha1.pkl"
    torch.save(legacy, path, _use_new_zipfile_serialization=False)
    pose = HeadPose.build(weights="pretrained", weights_dir=str(tmp_path), layers=(1, 1, 1, 1), input_size=64)
    assert torch.equal(pose.net.fc_roll.weight, legacy["fc_roll.weight"])
    assert pose(torch.zeros(1, 3, 96, 96)).shape == (1, 3)


@pytest.mark.parametrize("k", [0, 1, 33, 40, 65])
def test_peaked_bin_logits_give_the_bin_angle(k):
    logits = torch.full((2, 3, 66), -20.0)
    logits[..., k] = 20.0
    assert torch.allclose(angles_from_logits(logits), torch.full((2, 3), 3.0 * k - 99), atol=1e-3)


def test_uniform_bins_give_the_middle_angle_and_gradients_flow():
    logits = torch.zeros(1, 3, 66, requires_grad=True)
    angles = angles_from_logits(logits)
    assert torch.allclose(angles, torch.full((1, 3), 3 * 32.5 - 99))
    angles.sum().backward()
    assert logits.grad.abs().sum() > 0
