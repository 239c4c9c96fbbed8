"""The weight registry: resolution order, package-shipped files, sha256 checks and the listing command."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from swaplab.errors import MissingWeightsError
from swaplab.experts.__main__ import main as list_weights
from swaplab.experts.registry import (
    WEIGHTS,
    WeightEntry,
    load_pretrained,
    load_tensors,
    package_file,
    register_weights,
    resolve_weights,
    sha256_of,
)


@pytest.fixture
def entry(tmp_path):
    """A temporary registry entry whose 'official' file is a Linear(3, 2) state dict with a known sha256."""
    official = tmp_path / "official.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), official)
    key = "test_linear"
    WEIGHTS[key] = WeightEntry(key, "nested/linear.pth", "the test suite", "Linear(3, 2)", sha256_of(official))
    yield WEIGHTS[key], official
    del WEIGHTS[key]


def test_weights_dir_then_package_then_error(tmp_path):
    assert package_file("facenet_pytorch", "data/onet.pt") is not None
    assert package_file("facenet_pytorch", "data/no_such_file.pt") is None
    assert package_file("no_such_package_xyz", "x") is None
    key = "test_shipped"
    WEIGHTS[key] = WeightEntry(key, "onet.pt", "facenet-pytorch", "MTCNN O-net", package=("facenet_pytorch",
                                                                                             "data/onet.pt"))
    try:
        assert resolve_weights(key, weights_dir=tmp_path) == package_file("facenet_pytorch", "data/onet.pt")
        (tmp_path / "onet.pt").write_bytes(b"local copy")
        assert resolve_weights(key, weights_dir=tmp_path) == tmp_path / "onet.pt"  # the user's file wins
    finally:
        del WEIGHTS[key]


def test_register_twice_with_other_contents_is_refused():
    entry = next(iter(WEIGHTS.values()))
    register_weights(entry)  # same contents: fine (module re-import)
    with pytest.raises(ValueError, match="registered twice"):
        register_weights(WeightEntry(entry.key, "other.pth", entry.source, entry.format))


def test_load_pretrained_checks_sha_and_architecture(tmp_path, entry, caplog):
    entry, official = entry
    target = tmp_path / "weights" / entry.filename
    target.parent.mkdir(parents=True)
    target.write_bytes(official.read_bytes())
    net = torch.nn.Linear(3, 2)
    source = load_pretrained(net, "pretrained", entry.key, weights_dir=tmp_path / "weights")
    assert source == str(target)
    assert torch.equal(net.weight, load_tensors(official)["weight"])

    torch.save(torch.nn.Linear(3, 2).state_dict(), target)  # a fine-tuned file: loads, with a warning
    with caplog.at_level(logging.WARNING):
        load_pretrained(net, "pretrained", entry.key, weights_dir=tmp_path / "weights")
    assert "sha256 differs" in caplog.text

    torch.save(torch.nn.Linear(4, 2).state_dict(), target)
    with pytest.raises(ValueError, match="linear.pth does not match .*size mismatch"):
        load_pretrained(net, "pretrained", entry.key, weights_dir=tmp_path / "weights")
    torch.save({"other.weight": torch.zeros(2, 3)}, target)
    with pytest.raises(ValueError, match="does not match the 'test_linear' architecture"):
        load_pretrained(net, "pretrained", entry.key, weights_dir=tmp_path / "weights")
    with pytest.raises(ValueError, match="weights must be"):
        load_pretrained(net, "imagenet", entry.key)


def test_nested_and_data_parallel_state_dicts(tmp_path):
    state = {f"module.{k}": v for k, v in torch.nn.Linear(3, 2).state_dict().items()}
    torch.save({"net_recon": state, "epoch": 20}, tmp_path / "ckpt.pth")
    assert sorted(load_tensors(tmp_path / "ckpt.pth", subkey="net_recon")) == ["bias", "weight"]
    with pytest.raises(KeyError, match="no entry 'net'.*epoch"):
        load_tensors(tmp_path / "ckpt.pth", subkey="net")


def test_listing_command_reports_found_missing_and_sha(tmp_path, entry, capsys):
    entry, official = entry
    assert list_weights(["--weights-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert f"MISSING  {entry.key}" in text and f"put it at {tmp_path / entry.filename}" in text
    assert "the test suite" in text

    (tmp_path / entry.filename).parent.mkdir(parents=True)
    (tmp_path / entry.filename).write_bytes(official.read_bytes())
    list_weights(["--weights-dir", str(tmp_path), "--json"])
    rows = {row["key"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == set(WEIGHTS)
    assert rows[entry.key]["status"] == "weights_dir" and rows[entry.key]["sha256_match"] is True

    torch.save({"weight": torch.zeros(2, 3)}, tmp_path / entry.filename)
    list_weights(["--weights-dir", str(tmp_path), "--json"])
    rows = {row["key"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows[entry.key]["sha256_match"] is False


def test_missing_explicit_path_is_one_line(tmp_path, entry):
    entry, _ = entry
    with pytest.raises(MissingWeightsError) as err:
        resolve_weights(entry.key, path=tmp_path / "nope.pth")
    assert "nope.pth" in str(err.value) and "the test suite" in str(err.value) and "\n" not in str(err.value)


def test_torch_hub_style_names_carry_a_sha256_prefix(tmp_path):
    entry = WeightEntry("x", "vgg19-dcbb9e9d.pth", "torchvision", "VGG19")
    assert entry.sha256_prefix == "dcbb9e9d"
    assert WeightEntry("y", "79999_iter.pth", "s", "f").sha256_prefix is None
    file = tmp_path / "vgg19-dcbb9e9d.pth"
    file.write_bytes(b"not the official file")
    assert entry.matches(file) is False
    assert WeightEntry("z", file.name, "s", "f", sha256=sha256_of(file)).matches(file) is True
