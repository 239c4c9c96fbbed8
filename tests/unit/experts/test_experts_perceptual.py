"""Perceptual experts: torchvision / FSGAN VGG feature maps and LPIPS, loaded from files with the official
key names and checked against independent reference computations."""

from __future__ import annotations

import lpips
import pytest
import torch
import torchvision
from torch import nn

from swaplab.errors import MissingWeightsError, UnsafeCheckpointError
from swaplab.experts.perceptual import (
    FSGAN_LAYERS,
    LPIPS,
    VGGFeatures,
    vgg_layer_names,
)
from swaplab.experts.registry import load_tensors, package_file
from swaplab.losses import MultiLevelFeatureLoss

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def torchvision_reference(constructor, **kwargs) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A torchvision model with random conv weights, and its full state dict (official keys and shapes).

    The model is built on the meta device and only `features` is materialised: the big classifier (ignored
    by the experts) is stored as a zero-stride tensor of the official shape, so the file stays small."""
    with torch.device("meta"):
        model = constructor(weights=None, **kwargs)
    model.features.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(1)
    for module in model.features:
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.data.normal_(0, (2 / fan_in) ** 0.5, generator=generator)
            module.bias.data.normal_(0, 0.05, generator=generator)
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0, 0.1, generator=generator)
            module.running_mean.normal_(0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.num_batches_tracked.fill_(7)
    state = {k: v.clone() if k.startswith("features.") else torch.zeros(1).expand(v.shape)
             for k, v in model.state_dict().items()}
    return model.eval(), state


def images(n: int = 2, side: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, side, side) * 2 - 1


def test_layer_names_follow_torchvision_feature_indices():
    names = vgg_layer_names(19)
    assert (names[1], names[6], names[11], names[20], names[29]) == ("relu1_1", "relu2_1", "relu3_1", "relu4_1",
                                                                      "relu5_1")
    kinds = {"conv": nn.Conv2d, "bn": nn.BatchNorm2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}
    for depth, cfg in ((16, "D"), (19, "E")):
        for batch_norm in (False, True):
            layers = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs[cfg], batch_norm=batch_norm)
            names = vgg_layer_names(depth, batch_norm)
            assert len(names) == len(layers)
            for name, layer in zip(names, layers, strict=True):
                assert isinstance(layer, kinds[name.rstrip("0123456789_")]), name


def test_vgg19_loads_torchvision_file_and_matches_sliced_torchvision(tmp_path):
    reference, state = torchvision_reference(torchvision.models.vgg19)
    assert state["classifier.6.weight"].shape == (1000, 4096)
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    layers = ("relu5_1", "relu1_1", "conv2_2", "pool3", "conv4_2")
    expert = VGGFeatures.build(weights="pretrained", path=str(path), layers=layers)
    assert expert.weights == str(path) and expert.normalization == "imagenet"
    x = images()
    with torch.no_grad():
        normalised = ((x + 1) / 2 - MEAN) / STD
        index = {"relu1_1": 1, "conv2_2": 7, "pool3": 18, "conv4_2": 21, "relu5_1": 29}
        expected = [reference.features[: index[name] + 1](normalised.clone()) for name in layers]
    got = expert(x)
    assert [f.shape for f in got] == [e.shape for e in expected]
    for f, e in zip(got, expected, strict=True):
        assert e.std() > 0.01  # activations of a sensible scale, so the comparison means something
        torch.testing.assert_close(f, e, rtol=1e-4, atol=1e-5)


def test_forward_stops_at_the_deepest_requested_layer():
    expert = VGGFeatures.build(widths=(4, 4, 8, 8, 8))
    calls = []
    names = expert.net.layer_names
    expert.net.features[names.index("relu3_1") + 1].register_forward_hook(lambda *_: calls.append(1))
    maps = expert(images(1, 16), layers=("relu1_1", "relu3_1"))
    assert [m.shape[1:] for m in maps] == [(4, 16, 16), (8, 4, 4)] and not calls
    with pytest.raises(ValueError, match="unknown VGG layers \\['relu6_1'\\]"):
        expert(images(1, 16), layers=("relu6_1",))


def test_feature_list_feeds_multilevel_loss_and_passes_gradient_to_inputs():
    expert = VGGFeatures.build(widths=(4, 4, 8, 8, 8), crop=(0.125, 0.875), size=16)
    x, y = images(2, 32).requires_grad_(True), images(2, 32)
    loss = MultiLevelFeatureLoss()(expert(x), expert(y))
    loss.backward()
    assert loss > 0 and x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in expert.net.parameters())
    assert MultiLevelFeatureLoss()(expert(y), expert(y)) == 0


def fsgan_vgg_loss_features(features: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """FSGAN's Vgg19 slicing ([0:2], [2:7], [7:12], [12:21], [21:30] of a VGG19-BN with in-place ReLUs)."""
    outputs, h = [], x
    for lo, hi in ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30)):
        h = features[lo:hi](h)
        outputs.append(h)
    return outputs


def test_fsgan_vggface2_checkpoint_round_trips_and_matches_fsgan_loss_layers(tmp_path):
    reference, state = torchvision_reference(torchvision.models.vgg19_bn)
    classifier = {"classifier.0.weight": (4096, 512 * 8 * 8), "classifier.0.bias": (4096,),
                  "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
                  "classifier.6.weight": (8631, 4096), "classifier.6.bias": (8631,)}
    state.update({k: torch.zeros(1).expand(shape) for k, shape in classifier.items()})
    path = tmp_path / "vggface2_vgg19_256_1_2_id.pth"
    torch.save({"state_dict": state, "arch": "vgg.vgg19(num_classes=8631)", "epoch": 3}, path)

    expert = VGGFeatures.build(weights="pretrained", registry_key="fsgan_vgg19_vggface2", path=str(path))
    ours = expert.net.state_dict()
    file_features = {k: v for k, v in state.items() if k.startswith("features.")}
    assert set(ours) == set(file_features)
    assert all(torch.equal(ours[k], v) for k, v in file_features.items())
    assert expert.layers == FSGAN_LAYERS and expert.normalization == "minus_one_one"

    x = images(2, 32)
    assert torch.equal(expert.preprocess(x), x)  # [-1, 1] as it is, unlike the ImageNet presets
    imagenet = VGGFeatures(expert.net, normalization="imagenet")
    assert not torch.allclose(imagenet.preprocess(x), x)
    with torch.no_grad():  # eval first: a forward in train mode moves the reference's running statistics
        expected_running = fsgan_vgg_loss_features(reference.features.eval(), x.clone())
        expected_batch = fsgan_vgg_loss_features(reference.features.train(), x.clone())
    # FSGAN's VGGLoss is never put in eval mode: BatchNorm uses batch statistics (the preset's default).
    assert expert.batch_stats
    for f, e in zip(expert(x), expected_batch, strict=True):
        torch.testing.assert_close(f, e, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, state[k]) for k, v in expert.net.state_dict().items())  # running stats untouched
    running = VGGFeatures.build(weights="pretrained", registry_key="fsgan_vgg19_vggface2", path=str(path),
                                batch_stats=False)
    for f, e in zip(running(x), expected_running, strict=True):
        torch.testing.assert_close(f, e, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(expected_running[-1], expected_batch[-1])


def test_pickled_model_object_is_refused(tmp_path):
    path = tmp_path / "vggface2_vgg19_256_1_2_id.pth"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3)), path)
    with pytest.raises(UnsafeCheckpointError, match="Re-save"):
        VGGFeatures.build(weights="pretrained", registry_key="fsgan_vgg19_vggface2", path=str(path))


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory) -> tuple[nn.Module, str]:
    reference, state = torchvision_reference(torchvision.models.alexnet)
    path = tmp_path_factory.mktemp("weights") / "alexnet-owt-7be5be79.pth"
    torch.save(state, path)
    return reference, str(path)


def test_lpips_never_downloads_or_unpickles(alexnet_file, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download weights")

    real_load = torch.load

    def tensors_only(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "torch.load without weights_only=True"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch, "load", tensors_only)
    expert = LPIPS.build(weights="pretrained", net="alex", path=alexnet_file[1])
    assert "backbone=" + alexnet_file[1] in expert.weights


def test_lpips_heads_come_from_the_package_file(alexnet_file):
    expert = LPIPS.build(weights="pretrained", net="alex", path=alexnet_file[1])
    shipped = package_file("lpips", "weights/v0.1/alex.pth")
    assert expert.weights.startswith(f"lin={shipped};")
    heads = load_tensors(shipped)
    assert len(heads) == 5
    for i in range(5):
        weight = getattr(expert.net, f"lin{i}").model[1].weight
        assert torch.equal(weight, heads[f"lin{i}.model.1.weight"])
        assert (weight >= 0).all() and weight.sum() > 0  # trained LPIPS heads are clamped non-negative


def test_lpips_matches_the_package_and_grows_with_noise(alexnet_file):
    torchvision_alexnet, path = alexnet_file
    expert = LPIPS.build(weights="pretrained", net="alex", path=path)
    reference = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    for part in reference.net.children():
        for index, module in part.named_children():
            module.load_state_dict(torchvision_alexnet.features[int(index)].state_dict())
    x = torch.nn.functional.interpolate(images(3, 8), size=64, mode="bilinear")  # smooth images
    noise = torch.randn_like(x)
    y = (x + 0.3 * noise).clamp(-1, 1)
    with torch.no_grad():
        expected = reference(x, y).reshape(-1)
    distance = expert(x, y)
    assert distance.shape == (3,)
    torch.testing.assert_close(distance, expected, rtol=1e-4, atol=1e-6)
    assert torch.equal(expert(x, x), torch.zeros(3))
    levels = torch.stack([expert(x, (x + a * noise).clamp(-1, 1)) for a in (0.05, 0.2, 0.6)])
    assert (levels[1:] > levels[:-1]).all()


def test_lpips_missing_backbone_is_recorded_as_random(tmp_path):
    expert = LPIPS.build(weights="pretrained", net="alex", weights_dir=str(tmp_path))
    assert expert.weights.endswith("backbone=RANDOM") and expert.weights.startswith("lin=")
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        LPIPS.build(weights="pretrained", net="alex", weights_dir=str(tmp_path), require_backbone=True)
    assert LPIPS.build(net="alex").weights == "random"
