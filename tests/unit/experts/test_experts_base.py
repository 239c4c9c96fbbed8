"""FrozenExpert behaviour, the weight registry's errors, and tensors-only loading."""

from __future__ import annotations

import copy
import os
import pickle

import pytest
import torch
from torch import nn

from swaplab.errors import MissingWeightsError, UnsafeCheckpointError
from swaplab.experts import Experts, IdentityEncoder, IResNet, load_tensors, resolve_weights
from swaplab.io.checkpoints import safe_torch_load


def tiny_identity() -> IdentityEncoder:
    return IdentityEncoder.build(depth=18, widths=(8, 16, 32, 32), input_size=32)


class Holder(nn.Module):
    def __init__(self, expert):
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.expert = expert


def test_expert_is_invisible_to_optimizers_and_checkpoints():
    holder = Holder(tiny_identity())
    assert [n for n, _ in holder.named_parameters()] == ["linear.weight", "linear.bias"]
    assert all(not k.startswith("expert") for k in holder.state_dict())
    holder.load_state_dict(holder.state_dict(), strict=True)  # no missing expert keys either


def test_expert_stays_in_eval_mode_and_frozen():
    expert = tiny_identity()
    Holder(expert).train()
    assert not expert.training and not expert.net.training
    assert all(not p.requires_grad for p in expert.net.parameters())


def test_no_graph_without_gradient_but_gradient_to_inputs_when_needed():
    expert = tiny_identity()
    x = torch.rand(2, 3, 48, 48) * 2 - 1
    z = expert(x)
    assert z.grad_fn is None and z.shape == (2, 512)
    assert torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-5)
    x.requires_grad_(True)
    expert(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in expert.net.parameters())


def test_expert_moves_with_its_owner_and_is_shared_by_deepcopy():
    expert = tiny_identity()
    holder = Holder(expert).double()
    assert next(expert.net.parameters()).dtype == torch.float64
    assert copy.deepcopy(holder).expert is expert


def test_experts_container_reports_missing_roles():
    experts = Experts(identity=tiny_identity())
    experts.require("identity")
    with pytest.raises(ValueError, match="needs experts \\['parsing'\\]"):
        experts.require("identity", "parsing")


def test_identity_encoder_loads_a_state_dict_file_and_matches_the_net(tmp_path):
    reference = IResNet(depth=18, widths=(8, 16, 32, 32), input_size=32).eval()
    for p in reference.parameters():
        p.data.normal_(0, 0.1)
    path = tmp_path / "backbone.pth"
    torch.save(reference.state_dict(), path)
    expert = IdentityEncoder.build(weights="pretrained", depth=18, widths=(8, 16, 32, 32), input_size=32,
                                   path=str(path), crop=(0.0, 1.0))
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = torch.nn.functional.normalize(reference(x), dim=-1)
    assert torch.allclose(expert(x), expected, atol=1e-5)
    assert expert.weights == str(path)


def test_iresnet_has_arcface_torch_layout():
    net = IResNet(depth=100)
    blocks = [len(getattr(net, f"layer{i}")) for i in range(1, 5)]
    assert blocks == [3, 13, 30, 3]
    keys = net.state_dict()
    assert keys["fc.weight"].shape == (512, 512 * 7 * 7)
    for key in ("conv1.weight", "prelu.weight", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_var",
                "layer4.2.bn3.bias", "bn2.weight", "features.running_mean"):
        assert key in keys


def test_missing_weights_name_file_source_and_destination(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        resolve_weights("arcface_r100_ms1mv3", weights_dir=tmp_path)
    message = str(err.value)
    assert "backbone.pth" in message and "insightface" in message and str(tmp_path) in message
    assert "\n" not in message


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Payload(marker)}, f)
    with pytest.raises(UnsafeCheckpointError):
        load_tensors(path)
    torch.save({"weight": torch.zeros(1), "hook": _Payload(marker)}, tmp_path / "evil2.pth")
    with pytest.raises(UnsafeCheckpointError):
        safe_torch_load(tmp_path / "evil2.pth")
    assert not marker.exists()
