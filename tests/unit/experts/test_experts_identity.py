"""Identity experts: official file layouts (arcface_torch IResNet, TreB1eN IR-SE50, facenet-pytorch
InceptionResnetV1) load through the registry and give the reference networks' embeddings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from facenet_pytorch import InceptionResnetV1, fixed_image_standardization

from swaplab.errors import MissingWeightsError
from swaplab.experts import WEIGHTS, IdentityEncoder, resolve_weights
from swaplab.experts.arcface import IResNet
from swaplab.experts.facenet import FACENET_CROP
from swaplab.experts.irse import IRSE
from swaplab.faces.crop import crop_box

TINY = {"widths": (8, 16, 16, 32), "input_size": 32}


def bn_keys(prefix: str, ch: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (ch,), f"{prefix}.bias": (ch,), f"{prefix}.running_mean": (ch,),
            f"{prefix}.running_var": (ch,), f"{prefix}.num_batches_tracked": ()}


def arcface_torch_layout(layers: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of arcface_torch's iresnet (backbones/iresnet.py) `backbone.pth`, written from its source."""
    keys = {"conv1.weight": (64, 3, 3, 3), **bn_keys("bn1", 64), "prelu.weight": (64,)}
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True), start=1):
        for j in range(blocks):
            p, cin = f"layer{stage}.{j}", inplanes if j == 0 else planes
            keys |= {**bn_keys(f"{p}.bn1", cin), f"{p}.conv1.weight": (planes, cin, 3, 3), **bn_keys(f"{p}.bn2", planes),
                     f"{p}.prelu.weight": (planes,), f"{p}.conv2.weight": (planes, planes, 3, 3),
                     **bn_keys(f"{p}.bn3", planes)}
            if j == 0:  # every stage starts with stride 2, hence a downsample branch
                keys |= {f"{p}.downsample.0.weight": (planes, cin, 1, 1), **bn_keys(f"{p}.downsample.1", planes)}
        inplanes = planes
    return keys | {**bn_keys("bn2", 512), "fc.weight": (512, 512 * 7 * 7), "fc.bias": (512,),
                   **bn_keys("features", 512)}


def treb1en_ir_se50_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of TreB1eN's Backbone(50, 0.6, 'ir_se') (model.py: get_blocks(50), bottleneck_IR_SE)."""
    keys = {"input_layer.0.weight": (64, 3, 3, 3), **bn_keys("input_layer.1", 64), "input_layer.2.weight": (64,)}
    units = [(cin, depth) for cin, depth, n in ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
             for cin, depth in [(cin, depth)] + [(depth, depth)] * (n - 1)]
    for i, (cin, depth) in enumerate(units):
        p = f"body.{i}"
        if cin != depth:  # else the shortcut is MaxPool2d(1, stride): no tensors
            keys |= {f"{p}.shortcut_layer.0.weight": (depth, cin, 1, 1), **bn_keys(f"{p}.shortcut_layer.1", depth)}
        keys |= {**bn_keys(f"{p}.res_layer.0", cin), f"{p}.res_layer.1.weight": (depth, cin, 3, 3),
                 f"{p}.res_layer.2.weight": (depth,), f"{p}.res_layer.3.weight": (depth, depth, 3, 3),
                 **bn_keys(f"{p}.res_layer.4", depth), f"{p}.res_layer.5.fc1.weight": (depth // 16, depth, 1, 1),
                 f"{p}.res_layer.5.fc2.weight": (depth, depth // 16, 1, 1)}
    return keys | {**bn_keys("output_layer.0", 512), "output_layer.3.weight": (512, 512 * 7 * 7),
                   "output_layer.3.bias": (512,), **bn_keys("output_layer.4", 512)}


def compact_state(layout: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """One distinct value per tensor, stored as an expanded scalar: the file keeps the official keys and
    shapes but takes kilobytes, and any tensor landing under the wrong key shows up."""
    state = {}
    for i, (key, shape) in enumerate(layout.items()):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(i)
        else:
            spread = 1.0 + i / len(layout)
            if len(shape) >= 2:  # conv / linear: about 1 / fan-in, so activations stay finite through 50 blocks
                value = spread / (2 * math.prod(shape[1:]))
            else:  # BatchNorm scales, running variances and PReLU slopes near 1; shifts small
                value = spread if key.endswith(("running_var", ".weight")) else 0.01 * (i % 7)
            state[key] = torch.tensor(value).expand(shape)
    return state


def randomise_(net: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so loading them is actually checked."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
    return net.eval()


def images(batch: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def assert_unit_embeddings(z: torch.Tensor, batch: int, dim: int = 512) -> None:
    assert z.shape == (batch, dim) and torch.isfinite(z).all()
    assert torch.allclose(z.norm(dim=-1), torch.ones(batch), atol=1e-5)


def test_registry_names_the_published_files(tmp_path):
    expected = {
        **{f"arcface_r{d}_ms1mv3": f"ms1mv3_arcface_r{d}_fp16/backbone.pth" for d in (18, 34, 50, 100)},
        **{f"cosface_r{d}_glint360k": f"glint360k_cosface_r{d}_fp16_0.1/backbone.pth" for d in (18, 34, 50, 100)},
        "ir_se50_treb1en": "model_ir_se50.pth",
        "facenet_vggface2": "20180402-114759-vggface2.pt",
        "facenet_casia_webface": "20180408-102900-casia-webface.pt",
    }
    assert {k: WEIGHTS[k].filename for k in expected} == expected
    with pytest.raises(MissingWeightsError, match="glint360k_cosface_r100_fp16_0.1/backbone.pth"):
        resolve_weights("cosface_r100_glint360k", weights_dir=tmp_path)


@pytest.mark.parametrize(("depth", "layers"), [(18, (2, 2, 2, 2)), (34, (3, 4, 6, 3)), (50, (3, 4, 14, 3))])
def test_iresnet_depths_have_the_arcface_torch_layout(depth, layers):
    with torch.device("meta"):
        state = IResNet(depth=depth).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == arcface_torch_layout(layers)
    # the registry key alone picks the depth
    expert = IdentityEncoder.build(registry_key=f"cosface_r{depth}_glint360k", **TINY)
    assert [len(getattr(expert.net, f"layer{i}")) for i in range(1, 5)] == list(layers)


def test_fp16_stored_iresnet_file_loads_as_float32(tmp_path):
    reference = randomise_(IResNet(depth=18, **TINY))
    half = {k: v.half() if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    torch.save(half, tmp_path / "backbone.pth")
    expert = IdentityEncoder.build(weights="pretrained", registry_key="arcface_r18_ms1mv3", path=str(tmp_path / "backbone.pth"),
                                   crop=(0.0, 1.0), **TINY)
    assert all(v.dtype == torch.float32 for v in expert.net.state_dict().values() if v.is_floating_point())
    reference.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    x = images(2, 32)
    with torch.no_grad():
        expected = F.normalize(reference(x), dim=-1)
    z = expert(x)
    assert_unit_embeddings(z, 2)
    assert torch.allclose(z, expected, atol=1e-5)


@pytest.mark.parametrize("case", ["r50 file into r100", "other widths", "IResNet file into IR-SE"])
def test_file_of_another_architecture_fails_naming_the_file(tmp_path, case):
    path = tmp_path / "ms1mv3_arcface_r50_fp16_backbone.pth"
    torch.save(IResNet(depth=50, **TINY).state_dict(), path)
    build = {
        "r50 file into r100": lambda: IdentityEncoder.build(weights="pretrained", depth=100, path=str(path), **TINY),
        "other widths": lambda: IdentityEncoder.build(weights="pretrained", depth=50, path=str(path),
                                                      widths=(8, 16, 16, 16), input_size=32),
        "IResNet file into IR-SE": lambda: IdentityEncoder.build_ir_se(weights="pretrained", path=str(path), **TINY),
    }[case]
    with pytest.raises(ValueError, match="ms1mv3_arcface_r50_fp16_backbone.pth does not match"):
        build()


def test_ir_se50_loads_the_official_layout_exactly(tmp_path):
    layout = treb1en_ir_se50_layout()
    state = compact_state(layout)
    torch.save(state, tmp_path / "model_ir_se50.pth")
    expert = IdentityEncoder.build_ir_se(weights="pretrained", path=str(tmp_path / "model_ir_se50.pth"))
    loaded = expert.net.state_dict()
    assert {k: tuple(v.shape) for k, v in loaded.items()} == layout
    assert all(torch.equal(loaded[k], v.expand_as(loaded[k])) for k, v in state.items())
    assert expert.input_size == 112 and expert.crop == (19 / 256, 237 / 256)
    assert_unit_embeddings(expert(images(1, 256)), 1)


def test_ir_se_forward_matches_a_functional_reference(tmp_path):
    """Tiny IR-SE against TreB1eN's forward written with torch.nn.functional: BN-conv-PReLU-conv(stride)-BN-SE
    residual plus a max-pool(1, stride) or conv+BN shortcut; BN2d-flatten-linear-BN1d head; l2 norm."""
    layers, widths = (1, 2, 1, 1), (8, 16, 16, 32)
    net = randomise_(IRSE(widths=widths, layers=layers, input_size=32))
    torch.save(net.state_dict(), tmp_path / "tiny.pth")
    expert = IdentityEncoder.build_ir_se(weights="pretrained", path=str(tmp_path / "tiny.pth"), widths=widths,
                                         layers=layers, input_size=32, crop=(0.0, 1.0))
    sd = torch.load(tmp_path / "tiny.pth")

    def bn(t, p):
        return F.batch_norm(t, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                            False, 0.0, 1e-5)

    x = images(2, 32)
    h = F.prelu(bn(F.conv2d(x, sd["input_layer.0.weight"], padding=1), "input_layer.1"), sd["input_layer.2.weight"])
    units = [(cin, c) for cin, c, n in zip((8, 8, 16, 16), widths, layers, strict=True)
             for cin, c in [(cin, c)] + [(c, c)] * (n - 1)]
    for i, (cin, c) in enumerate(units):
        p, stride = f"body.{i}", 2 if i in (0, 1, 3, 4) else 1
        if cin == c:
            shortcut = h[..., ::stride, ::stride]
        else:
            shortcut = bn(F.conv2d(h, sd[f"{p}.shortcut_layer.0.weight"], stride=stride), f"{p}.shortcut_layer.1")
        r = F.conv2d(bn(h, f"{p}.res_layer.0"), sd[f"{p}.res_layer.1.weight"], padding=1)
        r = F.conv2d(F.prelu(r, sd[f"{p}.res_layer.2.weight"]), sd[f"{p}.res_layer.3.weight"], stride=stride, padding=1)
        r = bn(r, f"{p}.res_layer.4")
        gate = F.conv2d(F.relu(F.conv2d(r.mean((2, 3), keepdim=True), sd[f"{p}.res_layer.5.fc1.weight"])),
                        sd[f"{p}.res_layer.5.fc2.weight"])
        h = r * torch.sigmoid(gate) + shortcut
    h = F.linear(bn(h, "output_layer.0").flatten(1), sd["output_layer.3.weight"], sd["output_layer.3.bias"])
    expected = F.normalize(bn(h, "output_layer.4"), dim=-1)
    assert torch.allclose(expert(x), expected, atol=1e-5)


@pytest.fixture(scope="module")
def facenet_reference() -> InceptionResnetV1:
    """facenet-pytorch's own network with the VGGFace2 file's layout (logits head of 8631 classes)."""
    torch.manual_seed(0)
    return randomise_(InceptionResnetV1(pretrained=None, classify=True, num_classes=8631))


def test_facenet_matches_facenet_pytorch_on_the_standardised_crop(tmp_path, facenet_reference):
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(facenet_reference.state_dict(), path)  # exactly the official keys, logits head included
    expert = IdentityEncoder.build_facenet(weights="pretrained", path=str(path), crop=(0.0, 1.0))
    assert expert.weights == str(path) and expert.input_size == 160
    x = images(2, 160)
    facenet_reference.classify = False  # embedding mode: l2-normalised 512-D
    with torch.no_grad():
        expected = facenet_reference(fixed_image_standardization((x + 1) * 127.5))
    z = expert(x)
    assert_unit_embeddings(z, 2)
    assert torch.allclose(z, expected, atol=1e-5)


def test_casia_facenet_file_loads_from_facenet_pytorchs_cache(tmp_path, monkeypatch, facenet_reference):
    state = facenet_reference.state_dict()
    state["logits.weight"], state["logits.bias"] = torch.randn(10575, 512), torch.randn(10575)  # CASIA layout
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "checkpoints" / "20180408-102900-casia-webface.pt"
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    expert = IdentityEncoder.build_facenet(weights="pretrained", registry_key="facenet_casia_webface",
                                           weights_dir=str(tmp_path / "empty"))
    assert expert.weights == str(cached) and expert.crop == FACENET_CROP and expert.name == "facenet"
    loaded = expert.net.state_dict()
    assert loaded.keys() == {k for k in state if not k.startswith("logits.")}
    assert all(torch.equal(v, state[k]) for k, v in loaded.items())
    assert_unit_embeddings(expert(images(1, 256)), 1)  # the default rectangular crop of a 256 crop


def test_crop_boxes_cut_the_documented_region():
    side = 256
    rows = torch.arange(side).float().view(1, 1, side, 1).expand(1, 1, side, side)
    cols = rows.transpose(-1, -2)
    grid = torch.cat([rows, cols, rows], dim=1)
    left, top, right, bottom = (v * side for v in FACENET_CROP)
    face = crop_box(grid, FACENET_CROP, 160)
    assert face.shape == (1, 3, 160, 160)
    assert top <= face[:, 0].min() and face[:, 0].max() < bottom  # rows of the box only
    assert left <= face[:, 1].min() and face[:, 1].max() < right
    assert bottom - top > right - left  # an MTCNN box: taller than wide
    square = crop_box(grid, (19 / 256, 237 / 256), 218)  # no resampling at the box's own size
    assert square[0, 0, :, 0].tolist() == list(range(19, 237)) and square[0, 1, 0].tolist() == list(range(19, 237))
    with pytest.raises(ValueError, match="crop box must be"):
        IdentityEncoder.build(depth=18, crop=(0.5, 0.1, 0.2, 0.9), **TINY)
