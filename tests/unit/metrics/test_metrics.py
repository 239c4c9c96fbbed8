"""The metric registry on known answers: ID retrieval of source / target "swaps" on procedural faces, pose error
of an image with itself and of the offline pose estimator against the generator's pose, 2-process DDP equals
1 process, the Fréchet distance of known Gaussians and the FID Inception loader; against the true swap of
procedural pairs: image PSNR / SSIM / L1 over the image and the face, the 68-landmark error, and ID retrieval
over a fixed gallery of held-out people."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from swaplab.metrics import METRICS, SwapMetric, SwapRecord, build_metrics, frechet_distance

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
            "ssim", "psnr", "truth_image", "landmark_error"} <= set(METRICS)
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


def truth_faces(n: int, resolution: int = 32) -> dict[str, torch.Tensor]:
    """n pairs of n held-out people (never one identity twice in a pair) with their true swaps."""
    from swaplab.data import SyntheticSwapDataset

    data = SyntheticSwapDataset(resolution=resolution, num_identities=n, images_per_identity=1,
                                identity_offset=2_000_000, same_identity_rate=0.0, true_swap=True)
    return data.__getitems__(list(range(n)))


TRUTH_IMAGE = {f"{measure}{suffix}": {"metric": "truth_image", "measure": measure, "region": region}
               for measure in ("psnr", "ssim", "l1") for region, suffix in (("image", ""), ("face", "_face"))}


def test_truth_image_scores_the_true_swap_perfectly_and_others_inside_the_face():
    from torchmetrics.functional.image import structural_similarity_index_measure

    batch = truth_faces(8)
    metrics = build_metrics(TRUTH_IMAGE)
    assert [metrics[n].higher_is_better for n in TRUTH_IMAGE] == [True, True, True, True, False, False]
    metrics.update(record(batch, batch["true_swap"]))
    perfect = metrics.compute()
    assert perfect["psnr"] == perfect["psnr_face"] == 100.0  # identical images: the defined maximum, not inf
    assert perfect["ssim"] == pytest.approx(1.0, abs=1e-6) and perfect["ssim_face"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["l1"] == perfect["l1_face"] == 0.0

    metrics.reset()
    metrics.update(record(batch, batch["target"]))  # copy_target: right background / hair / pose, wrong face
    values, per = metrics.compute(), metrics.per_example()
    face = (batch["true_swap_mask"] == 1)[:, None].float()
    diff = (batch["target"] - batch["true_swap"]) / 2
    inside = lambda x: (x * face).sum((1, 2, 3)) / (3 * face.sum((1, 2, 3)))  # noqa: E731
    assert torch.allclose(per["l1_face"], inside(diff.abs()), atol=1e-6)
    assert torch.allclose(per["psnr_face"], -10 * torch.log10(inside(diff.pow(2))), atol=1e-4)
    assert torch.allclose(per["l1"], diff.abs().mean((1, 2, 3)), atol=1e-6)
    _, ssim_map = structural_similarity_index_measure((batch["target"] + 1) / 2, (batch["true_swap"] + 1) / 2,
                                                      data_range=1.0, reduction="none", return_full_image=True)
    assert torch.allclose(per["ssim_face"], inside(ssim_map), atol=1e-5)
    assert values["psnr_face"] < values["psnr"] < 100.0 and values["ssim_face"] < values["ssim"] < 1.0
    assert values["l1_face"] > 2 * values["l1"] > 0  # the target differs from the true swap in the face

    metrics.reset()  # a pair without face pixels has no face score and is left out of the summary
    no_face = dict(batch, true_swap_mask=batch["true_swap_mask"].clone())
    no_face["true_swap_mask"][0] = 0
    metrics.update(record(no_face, batch["target"]))
    assert torch.isnan(metrics.per_example()["l1_face"][0])
    assert metrics.compute()["l1_face"] == pytest.approx(float(per["l1_face"][1:].mean()), rel=1e-6)
    with pytest.raises(ValueError, match="truth_image measure must be one of"):
        build_metrics({"truth_image": {"measure": "mse"}})


class LookupLandmarks(nn.Module):
    """A stand-in landmark expert that knows the true points of the images it was given."""

    def __init__(self, table: dict[int, torch.Tensor]) -> None:
        super().__init__()
        self.table = table

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.table[images.data_ptr()]


def test_landmark_error_pixels_and_nme_against_the_true_swap():
    from swaplab.experts import DlibLandmarks

    batch = truth_faces(16, resolution=64)
    truth = batch["true_swap_landmarks"]
    exact = LookupLandmarks({batch["true_swap"].data_ptr(): truth, batch["source"].data_ptr(): batch["source_landmarks"]})
    metrics = build_metrics({"landmark_error": {}}, lambda role: exact)
    metrics.update(record(batch, batch["true_swap"]))
    assert metrics.compute() == {"landmark_error": 0.0, "landmark_error/nme": 0.0}
    metrics.reset()
    metrics.update(record(batch, batch["source"]))
    per = metrics.per_example()
    pixels = (batch["source_landmarks"] - truth).norm(dim=-1).mean(-1)
    assert torch.allclose(per["landmark_error"], pixels)
    assert torch.allclose(per["landmark_error/nme"], pixels / (truth[:, 36] - truth[:, 45]).norm(dim=-1))

    dlib = DlibLandmarks.build(points=68)  # the real expert in its fixed face box: only the ordering is sure
    scores = {}
    for which in ("true_swap", "target", "source"):
        metrics = build_metrics({"landmark_error": {}}, lambda role: dlib)
        metrics.update(record(batch, batch[which]))
        scores[which] = metrics.compute()
    print("dlib 68 on 64 px procedural faces vs true_swap_landmarks: "
          + ", ".join(f"{k} {v['landmark_error']:.2f} px (NME {v['landmark_error/nme']:.3f})" for k, v in scores.items()))
    assert scores["true_swap"]["landmark_error"] < 0.85 * scores["source"]["landmark_error"]
    assert scores["true_swap"]["landmark_error/nme"] < 0.85 * scores["source"]["landmark_error/nme"]


GALLERY = {"_target_": "swaplab.data.identities.SyntheticIdentities", "num_identities": 12,
           "identity_offset": 2_000_000, "images_per_identity": 2}


def test_id_retrieval_fixed_gallery_is_independent_of_the_pairs_scored(monkeypatch):
    from swaplab.metrics.identity import IDRetrieval

    calls = []
    embed = IDRetrieval._embed_gallery
    monkeypatch.setattr(IDRetrieval, "_embed_gallery", lambda self, *a: calls.append(a) or embed(self, *a))
    batch = truth_faces(12)
    encoder = identity_encoder()

    def scored(rows: slice, batches: int = 1) -> SwapMetric:
        metrics = build_metrics({"id_retrieval": {"identity_role": "identity", "gallery": GALLERY}}, lambda r: encoder)
        part = {k: v[rows] for k, v in batch.items()}
        for chunk in torch.arange(len(part["index"])).chunk(batches):
            sub = {k: v[chunk] for k, v in part.items()}
            metrics.update(record(sub, sub["true_swap"]))
        return metrics["id_retrieval"]

    full, first = scored(slice(None), batches=3), scored(slice(0, 4))
    assert len(calls) == 2  # once per metric, not per batch
    assert full.details()["gallery_size"] == first.details()["gallery_size"] == 12  # every held-out person
    (labels, embeddings), (labels4, embeddings4) = full.fixed_gallery(32, "cpu"), first.fixed_gallery(32, "cpu")
    assert torch.equal(labels, torch.arange(12).repeat_interleave(2) + 2_000_000) and torch.equal(labels, labels4)
    assert torch.equal(embeddings, embeddings4) and not embeddings.requires_grad
    per, per4 = full.per_example(), first.per_example()
    assert per4["retrieved"].shape == (4,)
    for key in per4:
        assert torch.equal(per[key][:4], per4[key]), key
    full.reset()
    full.update(record(batch, batch["true_swap"]))
    assert len(calls) == 2 and full.per_example()["retrieved"].tolist() == per["retrieved"].tolist()
    plain = build_metrics({"id_retrieval": {"identity_role": "identity"}}, lambda r: encoder)["id_retrieval"]
    plain.update(record(batch, batch["true_swap"]))
    assert "gallery_size" not in plain.details()  # without a gallery: the sources seen, as before


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
    """The offline pose expert (conf/experts/offline.yaml: 3DDFA_V2, fetched by `python -m swaplab.experts fetch`)
    measured against the generator's pose through the protocol's `pose_expert_error` entry (5.1 degrees: yaw /
    pitch / roll 2.0 / 3.5 / 1.9)."""
    from fetched_files import need
    from helpers import compose_config

    from swaplab.models.loading import build_experts

    cfg = compose_config("train", tmp_path, ["experts=offline"])
    cfg.paths.weights_dir = str(need("tddfa_mb1_120x120.safetensors", "tddfa_bfm_noneck_v3.safetensors"))
    pose = build_experts(cfg.experts, ["pose"]).pose
    assert type(pose).__name__ == "TDDFA"
    batch = faces(48, identities=24, per_identity=2, resolution=128)
    metrics = build_metrics({"pose_expert_error": {"metric": "pose_error", "image": "target",
                                                   "reference": "ground_truth"}}, lambda role: pose)
    metrics.update(record(batch, batch["source"]))
    values = metrics.compute()
    manual = (pose(batch["target"]) - batch["target_pose"]).float()
    assert values["pose_expert_error"] == pytest.approx(float(manual.norm(dim=-1).mean()), rel=1e-5)
    print("offline pose estimator vs ground truth, 48 synthetic faces at 128 px: "
          + ", ".join(f"{k} {v:.2f} deg" for k, v in values.items()))
    assert values["pose_expert_error"] < 10.0  # a broken estimator or a sign/axis mix-up gives far more


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


def test_id_retrieval_nearest_frame_and_video_mean_protocols_differ_where_they_should(monkeypatch):
    from swaplab.metrics.identity import label_scores

    angle = torch.tensor([0.0, 2.0, 0.9])  # video 7: frames at 0 and 2 rad (mean at 1 rad); video 3: 0.9 rad
    gallery = torch.stack([angle.cos(), angle.sin()], 1)
    labels = torch.tensor([7, 7, 3])
    query = torch.tensor([[1.0, 0.0]])  # exactly video 7's first frame, nearer video 3's single frame than 7's mean
    keys, nearest = label_scores(query, labels, gallery, "nearest")
    _, mean = label_scores(query, labels, gallery, "mean")
    assert keys.tolist() == [3, 7] and keys[nearest.argmax()] == 7 and keys[mean.argmax()] == 3
    assert nearest[0, 1] == pytest.approx(1.0) and mean[0, 1] == pytest.approx(float(torch.tensor(1.0).cos()))
    many = torch.randn(40, 2)  # computed in chunks: the same as at once
    whole = label_scores(many, labels, gallery, "nearest")[1]
    monkeypatch.setattr("swaplab.metrics.identity.SIMILARITY_CHUNK", 7)
    assert torch.allclose(label_scores(many, labels, gallery, "nearest")[1], whole)
    with pytest.raises(ValueError, match="match must be one of"):
        build_metrics({"id_retrieval": {"match": "median"}})


def test_id_retrieval_gallery_cache_is_keyed_by_the_embedders_weights(tmp_path, monkeypatch):
    from swaplab.experts import IdentityEncoder
    from swaplab.metrics.identity import IDRetrieval

    embedded = []
    embed = IDRetrieval._embed_gallery
    monkeypatch.setattr(IDRetrieval, "_embed_gallery", lambda self, *a: embedded.append(1) or embed(self, *a))
    batch = truth_faces(6)
    encoders = [identity_encoder(), identity_encoder()]  # two instances of the same (seeded) weights
    other = IdentityEncoder.build(weights="random", depth=18, widths=[8, 16, 32, 32], input_size=32, seed=5)
    gallery = {**GALLERY, "num_identities": 6}
    results = []
    for encoder in (*encoders, other):
        metric = build_metrics({"id_retrieval": {"identity_role": "identity", "gallery": gallery,
                                                 "cache_dir": str(tmp_path)}}, lambda r, e=encoder: e)
        metric.update(record(batch, batch["true_swap"]))
        results.append(metric["id_retrieval"].fixed_gallery(32, "cpu")[1])
    assert len(embedded) == 2 and len(list(tmp_path.glob("id_gallery_*.pt"))) == 2  # the same weights: from disk
    assert torch.equal(results[0], results[1]) and not torch.equal(results[0], results[2])


def test_expression_error_mean_and_rms_aggregations():
    from types import SimpleNamespace

    class Coefficients(nn.Module):  # the images' first two pixel values as "expression coefficients"
        def forward(self, images: torch.Tensor) -> SimpleNamespace:
            return SimpleNamespace(exp=images.flatten(1)[:, :2])

    target = torch.zeros(2, 3, 4, 4)
    target.view(2, -1)[:, :2] = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # distances 3 and 4 to a zero swap
    batch = {"source": target, "target": target}
    metrics = build_metrics({"mean": {"metric": "expression_error"},
                             "rms": {"metric": "expression_error", "aggregate": "rms"}}, lambda role: Coefficients())
    metrics.update(SwapRecord(torch.zeros_like(target), target, target, batch))
    values = metrics.compute()
    assert values["mean"] == pytest.approx(3.5) and values["rms"] == pytest.approx((12.5) ** 0.5)
    assert metrics.per_example()["rms"].tolist() == [3.0, 4.0]
    with pytest.raises(ValueError, match="aggregate must be one of"):
        build_metrics({"expression_error": {"aggregate": "median"}})
