"""experiments/benchmarks/peers.py (our step against a peer's own step, in turn) and the memory / fast-path keys of
train_step.py and suite.py. The peer here is a stand-in folder with the modules peers.py imports (the real peers
are public checkouts named by environment variables, never part of swaplab); its generator sleeps, so the ratio's
direction is known."""

from __future__ import annotations

import json
import statistics
import textwrap
from pathlib import Path

import torch
from helpers import load_benchmark

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
    """The peak is in bytes: at least this process's resident memory now (/proc's VmRSS, kB) and at most the
    machine's memory (ru_maxrss is KiB on Linux: read as bytes it would be 1024x too small, scaled twice 1024x too
    large). A 256 MiB block is held so that the resident set is well above the interpreter's."""
    train_step = load_benchmark("train_step")
    block = torch.ones(64 * 2**20)  # 256 MiB, touched
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    peak = train_step.peak_memory(torch.device("cpu"))["peak_rss_bytes"]
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    resident, total = (int(table[key].split()[0]) * 1024 for table, key in ((status, "VmRSS"), (meminfo, "MemTotal")))
    del block
    assert resident > 256 * 2**20 and 0.9 * resident <= peak <= total  # the kernel updates the peak lazily

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


HIFIFACE_STANDIN = {
    "model/hififace.py": f"""
        import time
        import torch
        from torch import nn
        from .arcface_torch.backbones.iresnet import iresnet100
        from .Deep3DFaceRecon_pytorch.models.networks import ReconNetWrapper

        class Generator(nn.Module):
            def __init__(self, identity_extractor_config):
                super().__init__()
                paths = identity_extractor_config
                self.id_extractor = nn.Module()
                self.id_extractor.f_3d = ReconNetWrapper(net_recon="resnet50", use_last_fc=False)
                self.id_extractor.f_3d.load_state_dict(torch.load(paths["f_3d_checkpoint_path"])["net_recon"])
                self.id_extractor.f_id = iresnet100(pretrained=False, fp16=False)
                self.id_extractor.f_id.load_state_dict(torch.load(paths["f_id_checkpoint_path"]))
                self.conv = nn.Conv2d(3, 4, 3, 1, 1)

            def forward(self, i_source, i_target):
                time.sleep({SLEEP})
                x = self.conv(i_target)
                return x[:, :3], x[:, :3, ::4, ::4], x[:, 3:], x[:, 3:, ::4, ::4]
        """,
    "model/multiscalediscriminator.py": """
        from torch import nn

        class MultiscaleDiscriminator(nn.Module):
            def __init__(self, input_nc):
                super().__init__()
                self.conv = nn.Conv2d(input_nc, 1, 4, 2, 1)

            def forward(self, x):
                return [[self.conv(x)]]
        """,
    "model/loss.py": """
        import lpips
        import torch
        from torch import nn
        from .Deep3DFaceRecon_pytorch.models.bfm import ParametricFaceModel

        class GLoss(nn.Module):
            def __init__(self, f_3d_checkpoint_path, f_id_checkpoint_path, realism_config, sid_config):
                super().__init__()
                self.lpips, self.face_model = lpips.LPIPS(net="vgg"), ParametricFaceModel()

            def forward(self, i_s, i_t, i_r, i_low, i_cycle, m_tar, m_r, m_low, d_r, same):
                _, _, _, q = self.face_model.compute_for_render(torch.zeros(i_s.shape[0], 257))
                same = same[..., None, None]
                total = (i_r - i_t).abs().mean() + (m_r - m_tar).abs().mean() + d_r[0][0].mean() + 0 * q.sum() \\
                    + self.lpips(i_r * same, i_t * same).mean()
                return total, {"g": total}, {}

        class DLoss(nn.Module):
            def forward(self, d_gt, d_fake):
                total = d_gt[0][0].mean() - d_fake[0][0].mean()
                return total, {"d": total}
        """,
}


def test_hififace_peer_runs_on_copies_of_our_experts_and_its_stand_ins_are_removed_after(tmp_path):
    """The peer's submodules and lpips are in-process stand-ins built on our experts: its f_id and f_3d must be
    copies of our nets with our weights (trainable, as the peer's plain modules are), its LPIPS ours, and after the
    import the stand-ins must be gone from sys.modules (our own lpips back in place)."""
    import sys

    import lpips

    peers, train_step = load_benchmark("peers"), load_benchmark("train_step")
    folder = tmp_path / "hififace"
    for name, text in HIFIFACE_STANDIN.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text))
    _, model, batch, device = train_step.prepare(train_step.parse(["--tiny", "--model", "hififace", "--device", "cpu"]))
    step, modules = peers.hififace_step(str(folder), model, batch, device)
    extractor, experts = modules["G.id_extractor"], model.experts
    for peer, ours in ((extractor.f_id, experts.identity.net), (extractor.f_3d, experts.face3d.net)):
        assert peer is not ours and type(peer) is type(ours)
        assert all(torch.equal(a, b) for a, b in zip(peer.state_dict().values(), ours.state_dict().values(),
                                                     strict=True))
        assert all(p.requires_grad for p in peer.parameters())
    assert sys.modules["lpips"] is lpips and not any(n.split(".")[0] == "model" for n in sys.modules)
    step()  # the peer's step runs on our batch (and its stand-in BFM returns our landmarks)
    assert peers.params(modules)["G.id_extractor"] == sum(p.numel() for n in ("identity", "face3d") for p in
                                           getattr(experts, n).net.parameters())


def test_the_same_networks_variant_gives_ours_the_peers_discriminator(tmp_path):
    """`hififace_peer_d` claims both sides run the same D: maum-ai/hififace's pix2pixHD MultiscaleDiscriminator(3)
    has 8,299,587 weights (counted on the peer's class) in three scales of 64..512 channels with BatchNorm."""
    import hydra
    from helpers import compose_config

    peers = load_benchmark("peers")
    cfg = compose_config("train", tmp_path, ["model=hififace", *peers.PEERS["hififace_peer_d"]["overrides"],
                                             "data.resolution=256"])
    with torch.device("meta"):
        disc = hydra.utils.instantiate(cfg.model.discriminator)
    assert sum(p.numel() for p in disc.parameters()) == 8_299_587
    assert len(disc.scales) == 3 and isinstance(disc.scales[0].model[3], torch.nn.BatchNorm2d)
