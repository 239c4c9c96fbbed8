"""The metric registry on known answers: ID retrieval of source / target "swaps" on procedural faces, pose error
of an image with itself and of the offline pose estimator against the generator's pose, 2-process DDP equals
1 process, the Fréchet distance of known Gaussians and the FID Inception loader."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from swaplab.metrics import METRICS, SwapRecord, build_metrics, frechet_distance

# Data and experts are imported inside the tests: the DDP test's spawned processes import this module.


pytestmark = pytest.mark.usefixtures("single_thread")


def faces(n: int, identities: int, per_identity: int = 1, resolution: int = 32) -> dict[str, torch.Tensor]:
    from swaplab.data import SyntheticSwapDataset

    data = SyntheticSwapDataset(resolution=resolution, num_identities=identities, images_per_identity=per_identity,
                                same_identity_rate=0.0)
    return data.__getitems__(list(range(n)))


def identity_encoder() -> nn.Module:
    from swaplab.experts import IdentityEncoder

    return IdentityEncoder.build(weights="random", depth=18, widths=[8, 16, 32, 32], input_size=32)


def record(batch: dict, swap: torch.Tensor, reconstruction: torch.Tensor | None = None) -> SwapRecord:
    return SwapRecord(swap, batch["source"], batch["target"], batch, reconstruction)


def test_registry_names_and_errors():
    assert {"id_retrieval", "id_similarity", "pose_error", "expression_error", "shape_error", "fid", "lpips",
            "ssim", "psnr"} <= set(METRICS)
    with pytest.raises(ValueError, match="unknown metric 'gaze'"):
        build_metrics({"gaze": {}})
    with pytest.raises(ValueError, match="evaluation.metrics.pose_error: .*colour"):
        build_metrics({"pose_error": {"colour": 1}})
    with pytest.raises(ValueError, match="evaluation.metrics.pose_error: pose_error reference must be"):
        build_metrics({"pose_error": {"reference": "source"}})
    with pytest.raises(ValueError, match="needs the 'identity_eval' expert, but the experts provide \\['pose'\\]"):
        build_metrics({"id_similarity": {}}, lambda role: (_ for _ in ()).throw(ValueError(
            f"a metric needs the '{role}' expert, but the experts provide ['pose']")))
    metrics = build_metrics({"pose_error": {}, "pose_gt": {"metric": "pose_error", "reference": "ground_truth"}})
    assert metrics.roles() == ["pose"] and metrics["pose_gt"].reference == "ground_truth"


def test_id_retrieval_source_is_perfect_target_is_chance():
    batch = faces(80, identities=80)
    metrics = build_metrics({"id_retrieval": {"identity_role": "identity"}, "id_similarity": {"identity_role": "identity"}},
                            lambda role: identity_encoder())
    metrics.update(record(batch, batch["source"]))
    as_source = metrics.compute()
    assert as_source["id_retrieval"] == 1.0 and as_source["id_retrieval/top5"] == 1.0
    assert as_source["id_similarity"] == pytest.approx(1.0, abs=1e-5)
    metrics.reset()
    metrics.update(record(batch, batch["target"]))
    as_target = metrics.compute()
    gallery = len(batch["source_identity"].unique())
    print(f"target-as-swap retrieval: top1 {as_target['id_retrieval']:.3f}, top5 {as_target['id_retrieval/top5']:.3f},"
          f" chance {1 / gallery:.3f} / {5 / gallery:.3f} ({gallery} gallery identities)")
    assert as_target["id_retrieval"] <= 2 / gallery  # at most 1 of 80 by luck: chance is 1/gallery
    assert as_target["id_retrieval/top5"] <= 3 * 5 / gallery
    per = metrics.per_example()
    assert per["id_retrieval"].mean() == pytest.approx(as_target["id_retrieval"])
    details = metrics.details()["id_retrieval"]["per_source"]
    assert set(details) == set(batch["source_identity"].tolist())


def test_pose_error_of_an_image_with_itself_is_zero():
    from swaplab.experts import HeadPose

    batch = faces(8, identities=8)
    pose = HeadPose.build(weights="random", layers=[1, 1, 1, 1], input_size=32)
    metrics = build_metrics({"pose_error": {}}, lambda role: pose)
    metrics.update(record(batch, batch["target"]))
    values = metrics.compute()
    assert values["pose_error"] == 0.0 and values["pose_error/yaw"] == 0.0
    metrics.reset()
    metrics.update(record(batch, batch["source"]))
    assert metrics.compute()["pose_error"] > 0


def test_offline_pose_estimator_error_against_ground_truth(tmp_path):
    """The offline pose expert (conf/experts/offline.yaml: dlib 68 landmarks + PnP fit) measured against the
    generator's pose through the protocol's `pose_expert_error` entry."""
    from helpers import compose_config

    from swaplab.models.loading import build_experts

    cfg = compose_config("train", tmp_path, ["experts=offline"])
    pose = build_experts(cfg.experts, ["pose"]).pose
    assert type(pose).__name__ == "CropLandmarkPose"
    batch = faces(48, identities=24, per_identity=2, resolution=128)
    metrics = build_metrics({"pose_expert_error": {"metric": "pose_error", "image": "target",
                                                   "reference": "ground_truth"}}, lambda role: pose)
    metrics.update(record(batch, batch["source"]))
    values = metrics.compute()
    manual = (pose(batch["target"]) - batch["target_pose"]).float()
    assert values["pose_expert_error"] == pytest.approx(float(manual.norm(dim=-1).mean()), rel=1e-5)
    print("offline pose estimator vs ground truth, 48 synthetic faces at 128 px: "
          + ", ".join(f"{k} {v:.2f} deg" for k, v in values.items()))
    assert values["pose_expert_error"] < 25.0  # a broken estimator or a sign/axis mix-up gives far more


def test_reconstruction_metrics_and_per_example_means():
    batch = faces(6, identities=6)
    metrics = build_metrics({"ssim": {}, "psnr": {}})
    assert metrics.needs_reconstruction
    noisy = (batch["target"] + 0.1 * torch.randn_like(batch["target"])).clamp(-1, 1)
    metrics.update(record(batch, batch["target"], reconstruction=batch["target"]))
    assert metrics.compute()["ssim"] == pytest.approx(1.0, abs=1e-5)
    metrics.reset()
    metrics.update(record(batch, batch["target"], reconstruction=noisy))
    values, per = metrics.compute(), metrics.per_example()
    mse = ((noisy - batch["target"]) / 2).pow(2).mean((1, 2, 3))
    assert torch.allclose(per["psnr"], -10 * torch.log10(mse), atol=1e-3)
    assert values["psnr"] == pytest.approx(float(per["psnr"].mean()), rel=1e-6) and values["ssim"] < 0.99


class PixelEmbedding(nn.Module):
    """A fixed random projection of the pixels: a deterministic stand-in identity network."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.randn(3 * 32 * 32, 16, generator=torch.Generator().manual_seed(0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weight


def retrieval_data() -> dict[str, torch.Tensor]:
    """30 noisy views of 12 'people' as sources, swaps halfway between source and another person."""
    g = torch.Generator().manual_seed(1)
    people = torch.randn(12, 3, 32, 32, generator=g)
    label = torch.arange(30) % 12
    source = people[label] + 0.8 * torch.randn(30, 3, 32, 32, generator=g)
    swap = 0.55 * people[label] + 0.45 * people[(label + 5) % 12] + 0.8 * torch.randn(30, 3, 32, 32, generator=g)
    return {"source": source, "target": swap, "swap": swap, "source_identity": label}


def retrieval_on(data: dict[str, torch.Tensor], rows: slice) -> torch.nn.Module:
    metrics = build_metrics({"id_retrieval": {"identity_role": "identity"}}, lambda role: PixelEmbedding())
    part = {k: v[rows] for k, v in data.items()}
    metrics.update(SwapRecord(part["swap"], part["source"], part["target"], part))
    return metrics


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    metrics = retrieval_on(retrieval_data(), slice(rank, None, 2))  # rank-interleaved shards of unequal content
    values = metrics.compute()
    details = metrics["id_retrieval"].details()  # local shard only
    if rank == 0:
        torch.save({"values": values, "local_rows": len(details["per_source"])}, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes each import torch and torchmetrics
def test_id_retrieval_on_two_ddp_processes_equals_one(tmp_path):
    single = retrieval_on(retrieval_data(), slice(None)).compute()
    assert 0.0 < single["id_retrieval"] < 1.0  # a case where the gallery of every process matters
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "ddp.pt")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_ddp_worker, args=(port, out), nprocs=2, join=True)
    ddp = torch.load(out)["values"]
    assert ddp == single
    half = retrieval_on(retrieval_data(), slice(0, None, 2)).compute()
    assert half != single  # one process's shard alone differs: the gather is what makes them equal


def test_frechet_distance_of_known_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    expected = 1 + 0 + 4 + (1 + 4 - 4) + (4 + 4 - 8) + (9 + 1 - 6)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected)
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]  # invariant under a common rotation
    assert frechet_distance(rot @ mu1, rot @ s1 @ rot.T, rot @ mu2, rot @ s2 @ rot.T) == pytest.approx(expected)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)

    g = torch.Generator().manual_seed(0)  # the metric's streaming statistics on samples of the two Gaussians
    fake = torch.from_numpy(mu1).float() + torch.randn(20000, 3, generator=g) * torch.tensor([1.0, 2.0, 3.0])
    real = torch.from_numpy(mu2).float() + torch.randn(20000, 3, generator=g) * torch.tensor([2.0, 2.0, 1.0])
    fid = build_metrics({"fid": {"features": 3}}, lambda role: nn.Flatten())
    for chunk in range(4):
        rows = slice(chunk * 5000, (chunk + 1) * 5000)
        fid.update(SwapRecord(fake[rows], real[rows], real[rows], {}))
    assert fid.compute()["fid"] == pytest.approx(expected, rel=0.05)


def test_fid_inception_loader_and_missing_file(tmp_path):
    from swaplab.errors import MissingWeightsError
    from swaplab.experts import InceptionFeatures
    from swaplab.experts.registry import WEIGHTS

    with pytest.raises(MissingWeightsError, match="pt_inception-2015-12-05-6726825d.pth.*pytorch-fid"):
        build_metrics({"fid": {"weights_dir": str(tmp_path)}}, lambda role: (_ for _ in ()).throw(ValueError(role)))
    reference = InceptionFeatures.build(weights="random", seed=3, input_size=75)
    path = tmp_path / WEIGHTS["fid_inception_v3"].filename
    torch.save(reference.net.state_dict(), path)
    loaded = InceptionFeatures.build(weights_dir=str(tmp_path), input_size=75)
    assert loaded.weights == str(path)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    features = loaded(images)
    assert features.shape == (2, 2048) and torch.allclose(features, reference(images))
