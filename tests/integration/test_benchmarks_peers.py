"""experiments/benchmarks/peers.py (our step against a peer's own step, in turn) and the memory / fast-path keys of
train_step.py and suite.py. The peer here is a stand-in folder with the modules peers.py imports (the real peers
are public checkouts named by environment variables, never part of swaplab); its generator sleeps, so the ratio's
direction is known."""

from __future__ import annotations

import json
import statistics
import textwrap

import torch

from tests.helpers import load_benchmark

SLEEP = 0.25
STANDIN = {
    "network/__init__.py": "",
    "network/AEI_Net.py": f"""
        import time
        import torch
        from torch import nn

        class AEI_Net(nn.Module):
            calls = 0

            def __init__(self, c_id=256):
                super().__init__()
                self.enc = nn.Conv2d(3, 4, 3, 1, 1)
                self.dec = nn.Conv2d(4, 3, 3, 1, 1)
                self.fc = nn.Linear(c_id, 4)

            def get_attr(self, x):
                return [self.enc(x)]

            def forward(self, x, z_id):
                AEI_Net.calls += 1
                time.sleep({SLEEP})
                attr = self.get_attr(x)
                return torch.tanh(self.dec(attr[0] * self.fc(z_id)[..., None, None])), attr
        """,
    "network/MultiscaleDiscriminator.py": """
        from torch import nn

        class MultiscaleDiscriminator(nn.Module):
            def __init__(self, input_nc, n_layers=3, norm_layer=None):
                super().__init__()
                self.conv = nn.Conv2d(input_nc, 1, 4, 2, 1)

            def forward(self, x):
                return [[self.conv(x)]]
        """,
}


def standin_peer(tmp_path):
    for name, text in STANDIN.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def test_peer_step_alternates_with_ours_and_the_ratio_is_peer_over_ours(tmp_path, monkeypatch):
    peers = load_benchmark("peers")
    monkeypatch.setenv("SWAPLAB_PEER_FACESHIFTER", str(standin_peer(tmp_path)))
    args = peers.parse(["--tiny", "--device", "cpu", "--steps", "2", "--warmup", "1", "--profile"])
    run = peers.child("faceshifter", "fp32", args)
    assert len(run["peer_seconds"]) == len(run["bare_seconds"]) == len(run["lightning_seconds"]) == 2
    assert min(run["peer_seconds"]) >= SLEEP  # the peer's own module ran in every timed step
    assert run["params_peer"]["G"] == 3 * 4 * 9 + 4 + 4 * 3 * 9 + 3 + 512 * 4 + 4  # the stand-in's, not ours
    assert run["params_ours"]["params/generator"] != run["params_peer"]["G"]
    assert [row["op"] for row in run["profile"]["peer"]] and run["peak_rss_bytes"] > 0
    summary = peers.summarise([run, {**run, "round": 1}])["faceshifter"]["fp32"]
    peer, bare, lightning = (statistics.median(run[f"{side}_seconds"]) for side in ("peer", "bare", "lightning"))
    assert summary["samples"] == 4 and summary["peer_median_seconds"] == round(peer, 4) >= SLEEP
    assert (summary["ratio_lightning"], summary["ratio_bare"]) == (round(peer / lightning, 3), round(peer / bare, 3))


def test_peers_reports_a_peer_without_its_folder_as_skipped(monkeypatch, capsys):
    peers = load_benchmark("peers")
    monkeypatch.delenv("SWAPLAB_PEER_FSGAN", raising=False)
    result = peers.main(["--methods", "fsgan", "--tiny", "--device", "cpu"])
    assert result["skipped"] == {"fsgan": "SWAPLAB_PEER_FSGAN is not set"} and result["runs"] == []
    assert json.loads(capsys.readouterr().out)["skipped"] == result["skipped"]


def test_peak_memory_counts_resident_bytes():
    train_step = load_benchmark("train_step")
    before = train_step.peak_memory(torch.device("cpu"))["peak_rss_bytes"]
    block = torch.ones(64 * 2**20)  # 256 MiB, touched
    after = train_step.peak_memory(torch.device("cpu"))["peak_rss_bytes"]
    del block
    assert after - before >= 200 * 2**20  # ru_maxrss is KiB on Linux: read as bytes it would grow by 256 KiB


def test_suite_resolutions_and_cpu_settings(capsys):
    suite = load_benchmark("suite")
    assert suite.resolutions(["64", "fast_faceswap=128"]) == {**dict.fromkeys(suite.PAPER, 64), "fast_faceswap": 128}
    assert suite.resolutions(["hififace=128"]) == {"hififace": 128}
    result = suite.main(["--tiny", "--configs", "faceshifter", "--settings", "fp32", "bf16", "--device", "cpu"])
    capsys.readouterr()
    runs = {run["setting"]: run for run in result["runs"]}
    assert all("error" not in run for run in runs.values()), runs
    assert (runs["fp32"]["precision"], runs["bf16"]["precision"]) == ("32-true", "bf16-mixed")
    assert runs["bf16"]["peak_rss_bytes"] > 0 and runs["bf16"]["wall_seconds"] > 0
    assert set(result["speedup"]["faceshifter"]) == {"bf16"} and result["fastest"]["faceshifter"] in runs


def test_saved_peer_results_keep_the_other_methods():
    peers = load_benchmark("peers")
    old = {"notes": "n", "summary": {"faceshifter": {"fp32": 1}, "fsgan": {"fp32": 0}},
           "skipped": {"hififace": "unset", "fsgan": "unset"},
           "runs": [{"method": "faceshifter", "x": 1}, {"method": "fsgan", "x": 0}]}
    new = {"machine": "m", "summary": {"fsgan": {"fp32": 2}}, "skipped": {}, "runs": [{"method": "fsgan", "x": 2}]}
    merged = peers.merge(old, new)
    assert merged["summary"] == {"faceshifter": {"fp32": 1}, "fsgan": {"fp32": 2}}
    assert merged["runs"] == [{"method": "faceshifter", "x": 1}, {"method": "fsgan", "x": 2}]
    assert merged["skipped"] == {"hififace": "unset"} and (merged["notes"], merged["machine"]) == ("n", "m")


def test_bare_loop_halves_fsgan_batches_in_the_progressive_phase():
    """FSGAN's training_step trains on half-size batches before model.progressive_steps; the bare loop must too,
    or its figures time a different step than Lightning's."""
    train_step = load_benchmark("train_step")
    args = train_step.parse(["--tiny", "--model", "fsgan", "--device", "cpu", "--override",
                             "model.progressive_steps=5"])
    _, model, batch, device = train_step.prepare(args)
    sides = []
    model.generator["reenactment"].register_forward_pre_hook(lambda m, inputs: sides.append(inputs[0].shape[-1]))
    train_step.bare_step_fn(model, batch, device, "32-true")()
    assert sides and set(sides) == {batch["target"].shape[-1] // 2}
