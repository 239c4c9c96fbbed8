"""Evaluation end to end: the SwapEvaluation callback during training (val/id_retrieval monitored), the FF++
protocol on a miniature FF++ tree, `python eval.py` on a FaceShifter and a HifiFace checkpoint (CSV, JSON,
markdown table, PNG), the synthetic_truth protocol with its reference rows (copy_target, copy_source,
true_swap) alone and beside a checkpoint, the protocol configs, and the throughput benchmark's --tiny mode."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import ROOT, TINY, compose_config, load_benchmark, read_metrics, run_cli
from omegaconf import OmegaConf
from PIL import Image
from test_configs import HIFIFACE_TINY, instantiate_everything
from test_ffpp import (
    PAIRS,
    VIDEOS,
    expected_samples,
    read_stamps,
    spaced,
    stamp,
    video_store,
    write_store,
    write_video,
)

from swaplab.errors import MissingWeightsError
from swaplab.experts.registry import sha256_of
from swaplab.metrics import build_metrics, expert_lookup
from swaplab.models.loading import build_experts

pytestmark = pytest.mark.usefixtures("single_thread")


def train_one(tmp_path: Path, overrides: list[str]) -> tuple[dict, Path]:
    from swaplab.tasks.train import train

    cfg = compose_config("train", tmp_path, [*overrides, "logger=csv", "optimized_metric=null",
                                             "callbacks=[last_checkpoint]", "trainer.max_steps=1"])
    metrics, _ = train(cfg)
    return metrics, tmp_path / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """FaceShifter and HifiFace, one training step each at 32x32."""
    return {name: train_one(tmp_path_factory.mktemp(name), overrides)[1]
            for name, overrides in (("faceshifter", TINY), ("hififace", HIFIFACE_TINY))}


def test_swap_evaluation_callback_logs_and_is_monitored(tmp_path):
    from swaplab.tasks.train import train

    cfg = compose_config("train", tmp_path, [
        *TINY, "logger=csv", "callbacks=[model_checkpoint,swap_evaluation]", "trainer.max_steps=2",
        "callbacks.swap_evaluation.every_n_steps=1", "callbacks.swap_evaluation.num_samples=8",
        "callbacks.swap_evaluation.batch_size=4", "callbacks.model_checkpoint.monitor=val/id_retrieval",
        "callbacks.model_checkpoint.mode=max", "+callbacks.model_checkpoint.every_n_train_steps=1",
        "optimized_metric=val/id_retrieval", "trainer.val_check_interval=100", "data.val.num_identities=12",
        "callbacks.swap_evaluation.gallery_identities=10"])
    metrics, objects = train(cfg)
    assert 0.0 <= metrics["val/id_retrieval"] <= 1.0 and np.isfinite(metrics["val/pose_error"])
    # 8 pairs scored against 10 validation identities, not the (at most 8) sources of the pairs scored
    assert read_metrics(tmp_path / "csv" / "metrics.csv", "val/id_retrieval/gallery_size") == {1: 10.0, 2: 10.0}
    assert {"identity_eval", "pose", "face3d"} <= set(objects["callbacks"][1]._extra_experts.roles())
    assert "identity_eval" not in objects["model"].experts  # built for the callback only
    logged = read_metrics(tmp_path / "csv" / "metrics.csv", "val/id_retrieval")
    assert sorted(logged) == [1, 2] and all(0.0 <= v <= 1.0 for v in logged.values())
    assert list((tmp_path / "checkpoints").glob("step*.ckpt")), "no checkpoint selected by val/id_retrieval"


def test_swap_evaluation_at_the_end_of_training_reaches_the_runs_metrics(tmp_path):
    from swaplab.tasks.train import train

    cfg = compose_config("train", tmp_path, [
        *TINY, "logger=csv", "callbacks=[swap_evaluation]", "trainer.max_steps=1", "trainer.val_check_interval=100",
        "callbacks.swap_evaluation.every_n_steps=100", "callbacks.swap_evaluation.num_samples=4",
        "callbacks.swap_evaluation.batch_size=4", "callbacks.swap_evaluation.full_at_end=true",
        "optimized_metric=test/id_retrieval"])
    metrics, _ = train(cfg)  # evaluated in on_train_end only, where Lightning takes no `log` calls
    assert 0.0 <= metrics["test/id_retrieval"] <= 1.0 and "val/id_retrieval" not in metrics
    assert sorted(read_metrics(tmp_path / "csv" / "metrics.csv", "test/id_retrieval")) == [1]


def test_source_gallery_reaches_its_identities_and_covers_the_pairs_scored():
    from swaplab.data import SyntheticSwapDataset
    from swaplab.training.callbacks.swap_evaluation import SourceGallery

    pairs = SyntheticSwapDataset(resolution=16, num_identities=30, images_per_identity=2, same_identity_rate=0.0)
    labels = pairs.__getitems__(list(range(len(pairs))))["source_identity"].tolist()
    gallery = SourceGallery(pairs, identities=10, label_key="source_identity", min_pairs=4, batch_size=7)
    first_ten = next(n for n in range(1, len(labels) + 1) if len(set(labels[:n])) == 10)
    assert len(gallery) == first_ten and len(set(labels[:len(gallery)])) == 10
    items = gallery.__getitems__([0, 3])
    assert items["identity"].tolist() == [labels[0], labels[3]] and items["image"].shape == (2, 3, 16, 16)
    assert len(SourceGallery(pairs, 10, "source_identity", min_pairs=50, batch_size=7)) == 50  # every pair scored
    assert len(SourceGallery(pairs, 100, "source_identity", min_pairs=4, batch_size=7)) == len(pairs)  # val has fewer


def test_example_table_rows():
    from swaplab.training.callbacks.swap_evaluation import example_table

    images = {k: torch.rand(5, 3, 8, 8) * 2 - 1 for k in ("source", "target", "swap")}
    columns, rows = example_table(images, {"id_similarity": torch.arange(5.0)}, rows=3)
    assert columns == ["source", "target", "swap", "id_similarity"] and len(rows) == 3
    assert rows[2][0].dtype == np.uint8 and rows[2][0].shape == (8, 8, 3) and rows[2][3] == 2.0


@pytest.fixture(scope="module")
def ffpp_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ffpp_tree")
    for video, frames in VIDEOS.items():
        write_video(root / "original_sequences/youtube/c23/videos" / f"{video}.mp4", int(video), frames)
    (root / "split.json").write_text(json.dumps(PAIRS))
    return root


def test_ffpp_protocol_pairs_frames_and_complete_table(ffpp_tree, checkpoints, tmp_path):
    from swaplab.tasks.evaluate import evaluate

    cfg = compose_config("eval", tmp_path, [
        f"ckpt={checkpoints['faceshifter']}", "evaluation=ffpp", f"evaluation.dataset.root={ffpp_tree}",
        f"evaluation.dataset.split={ffpp_tree / 'split.json'}", "evaluation.dataset.pairs=split",
        "evaluation.dataset.faces=null", "evaluation.dataset.aligned=true", "~evaluation.metrics.fid",
        "evaluation.max_pairs=3", "evaluation.batch_size=8", "evaluation.num_workers=0", "device=cpu"])
    summary = evaluate(cfg)
    out = tmp_path / "results" / "ffpp"
    with open(out / "per_example.csv") as f:
        rows = list(csv.DictReader(f))
    swaps = [("953", "974"), ("974", "953"), ("012", "026")]  # the first 3 of the split's 4 swaps
    chosen = [tuple(int(r[k]) for k in ("target_video", "frame", "source_video", "source_frame")) for r in rows]
    assert chosen == expected_samples(swaps) and len(rows) == 30
    (result,) = summary["checkpoints"]
    assert result["num_examples"] == 30 and result["model"] == "FaceShifter"
    expected = {"id_retrieval", "id_retrieval/top5", "id_similarity", "pose_error", "expression_error",
                "shape_error", "lpips", "ssim", "psnr"}
    assert expected <= set(result["metrics"]) and all(np.isfinite(v) for v in result["metrics"].values())
    assert set(result["details"]["id_retrieval"]["per_source"]) == {974, 953, 26}  # one result per source video
    assert all(r[m] not in ("", "nan") for r in rows for m in expected - {"id_retrieval/top5"})
    assert summary["metric_experts"]["id_retrieval"]["experts"]["identity_role"]["role"] == "identity_eval"
    # shape_error: 3DDFA_V2, not the face3d network HifiFace trains with (that one is shape_error_deep3d)
    shape, deep3d = (summary["metric_experts"][m]["experts"]["face3d_role"] for m in ("shape_error", "shape_error_deep3d"))
    assert (shape["role"], shape["name"]) == ("shape3d", "tddfa_mb1") and deep3d["role"] == "face3d"
    assert deep3d["name"] != shape["name"]


FFPP_TREE = ["evaluation=ffpp", "evaluation.dataset.pairs=split", "evaluation.batch_size=10",
             "evaluation.num_workers=0", "device=cpu"]
ALIGNED = ("evaluation.dataset.faces=null", "evaluation.dataset.aligned=true")  # the tree's videos are the crops
RETRIEVAL_ONLY = [f"~evaluation.metrics.{m}" for m in ("id_similarity", "pose_error", "expression_error",
                                                        "expression_error_rms", "shape_error", "shape_error_deep3d",
                                                        "fid", "lpips", "ssim",
                                                        "psnr")]


def ffpp_references(ffpp_tree: Path, tmp_path: Path, cache: Path, *overrides: str,
                    crops: tuple[str, ...] = ALIGNED) -> tuple[dict, list[dict]]:
    """FF++'s ID retrieval on the miniature tree (4 videos of 23-50 frames, 4 swaps), scoring the reference rows
    copy_source and copy_target, each gallery frame being a frame of an original video as it is."""
    from swaplab.tasks.evaluate import evaluate

    cfg = compose_config("eval", tmp_path, [
        "ckpt=[]", "metric_experts=random", "evaluation.reference_resolution=32", *FFPP_TREE, *crops, *RETRIEVAL_ONLY,
        f"evaluation.dataset.root={ffpp_tree}", f"evaluation.dataset.split={ffpp_tree / 'split.json'}",
        "evaluation.references=[copy_source,copy_target]", f"evaluation.gallery_cache={cache}",
        *overrides])
    summary = evaluate(cfg)
    with open(tmp_path / "results" / "ffpp" / "per_example.csv") as f:
        return summary, list(csv.DictReader(f))


def test_ffpp_id_retrieval_gallery_is_every_original_frame_whatever_the_subset(ffpp_tree, tmp_path, monkeypatch):
    from swaplab.metrics.identity import IDRetrieval

    embedded = []
    embed = IDRetrieval._embed_gallery
    monkeypatch.setattr(IDRetrieval, "_embed_gallery", lambda self, *a: embedded.append(1) or embed(self, *a))
    full, rows = ffpp_references(ffpp_tree, tmp_path / "all", tmp_path / "cache")
    subset, subset_rows = ffpp_references(ffpp_tree, tmp_path / "one", tmp_path / "cache", "evaluation.max_pairs=1")
    assert len(embedded) == 1 and len(list((tmp_path / "cache").iterdir())) == 1  # embedded once, then cached
    frames = sum(VIDEOS.values())
    for summary, swaps in ((full, 4), (subset, 1)):
        for result in summary["checkpoints"]:
            assert result["num_examples"] == 10 * swaps
            for name, match in (("id_retrieval", "nearest"), ("id_retrieval_video_mean", "mean")):
                details = result["details"][name]
                assert (details["gallery_size"], details["gallery_images"], details["match"]) == (4, frames, match)
    # nearest frame: the source frame itself is in the gallery, and so is the target frame (another video)
    by_name = {r["name"]: r["metrics"] for r in full["checkpoints"]}
    assert by_name["reference/copy_source"]["id_retrieval"] == 1.0
    assert by_name["reference/copy_target"]["id_retrieval"] == 0.0
    columns = ("checkpoint", "index", "source_video", *(f"{m}{s}" for m in ("id_retrieval", "id_retrieval_video_mean")
                                                          for s in ("", "/top5", "/retrieved")))
    mine = [tuple(r[c] for c in columns) for r in rows]
    theirs = [tuple(r[c] for c in columns) for r in subset_rows]
    assert theirs == [row for row in mine if row[1] in {r[1] for r in theirs}] and len(theirs) == 20
    video = ffpp_tree / "original_sequences/youtube/c23/videos/012.mp4"
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))  # the data changed
    ffpp_references(ffpp_tree, tmp_path / "changed", tmp_path / "cache", "evaluation.max_pairs=1")
    assert len(embedded) == 2 and len(list((tmp_path / "cache").iterdir())) == 2


@pytest.mark.parametrize("missing_faces", ["drop", "fail"])
def test_ffpp_frames_without_a_face_are_counted_and_dropped_or_failed(missing_faces, ffpp_tree, tmp_path):
    crops = {(v, f): cv2.resize(stamp(int(v), f), (48, 48), interpolation=cv2.INTER_AREA)
             for v, n in VIDEOS.items() for f in spaced(n)}
    del crops[("974", spaced(37)[3])]  # no face found there: a sample of 953_974 and one of 974_953 go
    store = video_store(tmp_path / "faces", crops)
    summary, rows = ffpp_references(ffpp_tree, tmp_path, tmp_path / "cache",
                                    f"evaluation.missing_faces={missing_faces}",
                                    crops=(f"evaluation.dataset.faces={store}", "evaluation.dataset.aligned=false"))
    results = {r["name"]: r for r in summary["checkpoints"]}
    source, target = results["reference/copy_source"], results["reference/copy_target"]
    for result in (source, target):
        assert result["num_examples"] == 38 and result["metrics"]["frames_without_face"] == 2
        assert result["details"]["frames_without_face"] == {"953_974": 1, "974_953": 1}
        assert result["details"]["id_retrieval"]["gallery_images"] == 39  # the store's faces
    scored = 1.0 if missing_faces == "drop" else 38 / 40  # the 2 faceless samples as misses
    for key in ("id_retrieval", "id_retrieval/top5"):
        assert source["metrics"][key] == pytest.approx(scored)
    assert target["metrics"]["id_retrieval"] == 0.0
    table = table_numbers((tmp_path / "results" / "ffpp" / "table.md").read_text())
    assert table["reference/copy_source"]["frames_without_face"] == 2.0


def write_swap_videos(folder: Path) -> None:
    """FF++-style swap videos of known content: frame f of <t>_<s> shows the source's frame f (modulo its length),
    except 012_026, a swap that failed: it shows the target's own frame."""
    for name in ("953_974", "974_953", "012_026", "026_012"):
        target, source = name.split("_")
        shown = target if name == "012_026" else source
        writer = cv2.VideoWriter(str(folder / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64))
        for f in range(VIDEOS[target]):
            writer.write(stamp(int(shown), f % VIDEOS[shown]))
        writer.release()


def mirrored_store(folder: Path) -> Path:
    """A face store of the tree's evenly spaced frames whose crops are the frames mirrored at 3/4 size, with that
    transform (image -> crop) recorded as each crop's matrix."""
    mirror = [[-0.75, 0.0, 47.625], [0.0, 0.75, -0.125]]  # pixel centres: x -> 47.25 - 0.75 x, y -> 0.75 y
    crops = [({"source": f"{v}.mp4", "frame": f, "identity": f"{v}.mp4", "matrix": mirror},
              cv2.flip(cv2.resize(stamp(int(v), f), (48, 48), interpolation=cv2.INTER_AREA), 1))
             for v, n in VIDEOS.items() for f in spaced(n)]
    return write_store(folder, crops)


@pytest.mark.parametrize("crops", ["aligned", "store"])
def test_eval_scores_existing_swap_videos_as_a_methods_swaps(crops, ffpp_tree, tmp_path, monkeypatch):
    from swaplab.metrics import SwapMetrics
    from swaplab.tasks.evaluate import evaluate

    videos = tmp_path / "manipulated_sequences" / "Deepfakes" / "c23" / "videos"
    videos.mkdir(parents=True)
    write_swap_videos(videos)
    source = ALIGNED if crops == "aligned" else (f"evaluation.dataset.faces={mirrored_store(tmp_path / 'faces')}",
                                                 "evaluation.dataset.aligned=false")
    shown = []
    update = SwapMetrics.update
    monkeypatch.setattr(SwapMetrics, "update", lambda self, record: shown.append(record) or update(self, record))
    summary = evaluate(compose_config("eval", tmp_path, [
        "ckpt=[]", f"videos={videos}", "metric_experts=random", "evaluation=ffpp", *source, *RETRIEVAL_ONLY,
        f"evaluation.dataset.root={ffpp_tree}", "evaluation.reference_resolution=32", "evaluation.num_workers=0",
        "evaluation.batch_size=20", "device=cpu"]))
    (result,) = summary["checkpoints"]
    assert result["name"] == "videos/Deepfakes" and result["num_examples"] == 40  # 4 videos x 10 frames
    for record in shown:  # each swap is the video's frame of the target's frame index, cropped as the target
        batch, swap = record.batch, record.swap
        video, frame = read_stamps(swap if crops == "aligned" else swap.flip(-1))
        failed = (batch["target_video"] == 12) & (batch["source_video"] == 26)
        if failed.any():  # the failed swap: the target's own crop
            assert (swap[failed] - record.target[failed]).abs().mean() < 0.05
        expected = torch.where(failed, batch["target_video"], batch["source_video"])
        lengths = torch.tensor([VIDEOS[f"{v:03d}"] for v in expected.tolist()])
        assert torch.equal(video, expected) and torch.equal(frame, batch["frame"] % lengths)
    if crops == "aligned":  # every frame of every original in the gallery: each swap's frame is there as it is
        assert result["details"]["id_retrieval"]["per_source"] == {12: 1.0, 26: 0.0, 953: 1.0, 974: 1.0}
        assert result["metrics"]["id_retrieval"] == 0.75
    assert summary["protocol"]["dataset"]["fakes"] == str(videos)
    with pytest.raises(ValueError, match="videos= scores FF\\+\\+ swap videos: it needs evaluation=ffpp"):
        evaluate(compose_config("eval", tmp_path / "synthetic", ["ckpt=[]", f"videos={videos}",
                                                                 "metric_experts=random"]))


def test_metric_experts_options_are_the_experts_sets(tmp_path):
    options = sorted(p.stem for p in (ROOT / "conf" / "experts").glob("*.yaml"))
    assert sorted(p.stem for p in (ROOT / "conf" / "metric_experts").glob("*.yaml")) == options
    for option in options:
        metric = compose_config("eval", tmp_path, ["ckpt=x.ckpt", f"metric_experts={option}"]).metric_experts
        model = compose_config("train", tmp_path, [f"experts={option}"]).experts
        metric, model = OmegaConf.to_container(metric, resolve=True), OmegaConf.to_container(model, resolve=True)
        if option == "offline":  # the 3DMM metrics score with 3DDFA_V2, not the random Deep3DFaceRecon HifiFace uses
            face3d = metric.pop("face3d")  # replaced whole, none of the Deep3DFaceRecon keys merged in
            assert face3d == {"_target_": "swaplab.experts.TDDFA.build", "output": "params",
                              "weights_dir": model["pose"]["weights_dir"]}
            model.pop("face3d")
        assert metric == model, option


def test_metric_experts_change_the_scores_not_the_swaps(checkpoints, tmp_path, monkeypatch):
    from swaplab.metrics import SwapMetrics
    from swaplab.tasks.evaluate import evaluate

    swaps: list[torch.Tensor] = []
    update = SwapMetrics.update
    monkeypatch.setattr(SwapMetrics, "update", lambda self, record: swaps.append(record.swap.clone())
                        or update(self, record))
    # a metric set whose `identity` would also fit the checkpoint's generator (same shape, other weights)
    other = ["metric_experts.identity_eval.seed=7", "+metric_experts.identity.seed=7",
             "metric_experts.identity.widths=[8,16,32,32]", "metric_experts.identity.input_size=32"]
    runs = []
    for name, overrides in (("same", []), ("other", other)):
        cfg = compose_config("eval", tmp_path / name, [
            f"ckpt={checkpoints['faceshifter']}", "evaluation=synthetic", "evaluation.dataset.num_identities=8",
            "evaluation.dataset.images_per_identity=1", "evaluation.batch_size=8", "device=cpu",
            "metric_experts=random", *overrides, "~evaluation.metrics.lpips", "~evaluation.metrics.pose_error_gt",
            "~evaluation.metrics.pose_expert_error", "~evaluation.metrics.expression_error",
            "~evaluation.metrics.shape_error"])
        runs.append(evaluate(cfg))
    (same,), (changed,) = (run["checkpoints"] for run in runs)
    assert len(swaps) == 2 and torch.equal(swaps[0], swaps[1])  # the checkpoint swaps with its own experts
    assert same["metrics"]["id_similarity"] != changed["metrics"]["id_similarity"]
    assert same["metrics"]["psnr"] == changed["metrics"]["psnr"]  # reconstruction: the model alone
    recorded = torch.load(checkpoints["faceshifter"], weights_only=True)["swaplab"]["experts"]["identity"]
    assert same["model_experts"]["identity"]["sha256"] == changed["model_experts"]["identity"]["sha256"] \
        == recorded["sha256"]
    described = [run["metric_experts"]["id_similarity"]["experts"]["identity_role"] for run in runs]
    assert described[0]["role"] == "identity_eval" and described[0]["sha256"] != described[1]["sha256"]
    table = (tmp_path / "other" / "results" / "synthetic" / "table.md").read_text()
    assert f"| id_similarity | identity_eval | arcface | random | {described[1]['sha256'][:12]} |" in table
    with pytest.raises(ValueError, match="takes no experts=.*metric_experts="):
        evaluate(compose_config("eval", tmp_path / "old", [f"ckpt={checkpoints['faceshifter']}", "experts=random"]))


def table_numbers(table: str) -> dict[str, dict[str, float]]:
    """The results table of a table.md (its first table) by row name and column."""
    body = table.split("\n\n")[1]
    lines = [line for line in body.splitlines() if line.startswith("|")]
    header = [re.sub(r" [↑↓]$", "", h.strip()) for h in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return {row[0]: {h: float(c) for h, c in zip(header[2:], row[2:], strict=True)} for row in rows}


@pytest.mark.slow  # a CLI process (Lightning and Hydra start-up) evaluating two checkpoints
def test_eval_cli_on_two_methods_writes_csv_json_table_and_plot(checkpoints, tmp_path):
    a, b = checkpoints["faceshifter"], checkpoints["hififace"]
    run_cli("eval.py", f"ckpt=[{a},{b}]", "evaluation=synthetic", "evaluation.dataset.num_identities=12",
            "evaluation.dataset.images_per_identity=2", "evaluation.batch_size=12", "device=cpu",
            f"hydra.run.dir={tmp_path}", env={"OMP_NUM_THREADS": "1"})
    out = tmp_path / "results" / "synthetic"
    summary = json.loads((out / "summary.json").read_text())
    results = summary["checkpoints"]
    assert [r["model"] for r in results] == ["FaceShifter", "HifiFace"]
    assert [r["sha256"] for r in results] == [sha256_of(a), sha256_of(b)]
    assert summary["protocol"]["name"] == "synthetic" and "pose_expert_error" in summary["protocol"]["metrics"]
    assert summary["metric_experts"]["pose_error"]["experts"]["pose_role"]["name"] == "hopenet"
    table = table_numbers((out / "table.md").read_text())
    assert list(table) == [r["name"] for r in results]
    for r in results:
        assert set(table[r["name"]]) == set(r["metrics"])
        for metric, value in r["metrics"].items():
            assert table[r["name"]][metric] == pytest.approx(round(value, 4), abs=1e-9), metric
    with open(out / "per_example.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 24 and {r["checkpoint"] for r in rows} == set(table)
    for r in results:  # the summary is the mean of the per-example scores
        mine = [float(row["pose_error"]) for row in rows if row["checkpoint"] == r["name"]]
        assert np.mean(mine) == pytest.approx(r["metrics"]["pose_error"], rel=1e-5)
    plot = np.asarray(Image.open(out / "comparison.png").convert("RGB"))
    assert plot.shape[0] > 100 and plot.shape[1] > 100 and plot.std() > 5


@pytest.mark.parametrize("option", sorted(p.stem for p in (ROOT / "conf" / "evaluation").glob("*.yaml")
                                          if p.stem != "none"))
def test_protocol_options_compose_build_and_run(option, tmp_path, ffpp_tree):
    tree = [f"evaluation.dataset.root={ffpp_tree}", "evaluation.dataset.faces=null",  # the FF++ gallery's videos
            "evaluation.dataset.aligned=true"] if option == "ffpp" else []
    cfg = compose_config("train", tmp_path, [*TINY, f"evaluation={option}", *tree])
    objects = instantiate_everything(cfg)
    specs = dict(cfg.evaluation.metrics)
    if "fid" in specs:  # no Inception file in the test's weights_dir: one clear line naming it
        with pytest.raises(MissingWeightsError, match="pt_inception-2015-12-05-6726825d.pth"):
            build_metrics({"fid": specs.pop("fid")}, objects["experts"])
    roles = build_metrics(specs).roles()
    extra = build_experts(cfg.experts, [r for r in roles if r not in objects["experts"]])
    metrics = build_metrics(specs, expert_lookup(objects["experts"], extra))
    from swaplab.metrics.runner import evaluate_swaps

    if cfg.evaluation.dataset._target_.endswith("SyntheticSwapDataset"):  # the protocol's own pairs (true swaps)
        from hydra.utils import instantiate

        batch = instantiate(cfg.evaluation.dataset, resolution=cfg.data.resolution).__getitems__([0, 1, 2])
    else:
        batch = objects["datamodule"].val_set.__getitems__([0, 1, 2])
        batch["source_video"] = batch["source_identity"]  # procedural faces stand in for FF++ videos here
    evaluate_swaps(objects["model"], [batch], metrics, "cpu")
    values = metrics.compute()
    assert set(values) >= set(specs) and all(np.isfinite(v) for v in values.values())


TRUTH_TINY = ["evaluation=synthetic_truth", "evaluation.dataset.num_identities=12",
              "evaluation.dataset.images_per_identity=1", "evaluation.batch_size=6", "device=cpu"]
REFERENCE_ROWS = ["reference/copy_target", "reference/copy_source", "reference/true_swap"]


def evaluate_references(tmp_path: Path, overrides: list[str]) -> tuple[dict, dict[str, dict], list[dict]]:
    """synthetic_truth's reference rows alone (no checkpoint) at 32 px on 12 held-out people."""
    from swaplab.tasks.evaluate import evaluate

    cfg = compose_config("eval", tmp_path, ["ckpt=[]", "metric_experts=random", "evaluation.reference_resolution=32",
                                            *TRUTH_TINY, *overrides])
    summary = evaluate(cfg)
    out = tmp_path / "results" / "synthetic_truth"
    with open(out / "per_example.csv") as f:
        rows = list(csv.DictReader(f))
    return summary, {r["name"]: r for r in summary["checkpoints"]}, rows


def test_synthetic_truth_reference_rows_give_floors_and_ceilings(tmp_path):
    summary, results, rows = evaluate_references(tmp_path / "all", [])
    assert list(results) == REFERENCE_ROWS and all(r["num_examples"] == 12 for r in results.values())
    truth, target, source = (results[n]["metrics"] for n in ("reference/true_swap", "reference/copy_target",
                                                              "reference/copy_source"))
    assert truth["truth_psnr"] == truth["truth_psnr_face"] == 100.0  # the defined maximum of identical images
    assert truth["truth_ssim"] == pytest.approx(1.0) and truth["truth_ssim_face"] == pytest.approx(1.0)
    assert truth["truth_l1"] == truth["truth_l1_face"] == 0.0
    assert target["truth_psnr_face"] < target["truth_psnr"] < truth["truth_psnr"]  # the face is what differs
    assert source["truth_l1"] > target["truth_l1"] > 0
    # dlib on 32 px procedural faces is far from exact (its own error is the true_swap row): only the ordering
    assert truth["landmark_error"] < source["landmark_error"]
    assert truth["landmark_error/nme"] < source["landmark_error/nme"]
    assert all(r["details"]["id_retrieval"]["gallery_size"] == 12 for r in results.values())  # every held-out person
    assert source["id_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert [r["checkpoint"] for r in rows] == [n for n in REFERENCE_ROWS for _ in range(12)]
    table = table_numbers((tmp_path / "all" / "results" / "synthetic_truth" / "table.md").read_text())
    assert list(table) == REFERENCE_ROWS and table["reference/true_swap"]["truth_psnr"] == 100.0
    assert summary["protocol"]["references"] == ["copy_target", "copy_source", "true_swap"]

    _, subset, subset_rows = evaluate_references(tmp_path / "five", ["evaluation.max_pairs=5"])
    assert all(r["num_examples"] == 5 and r["details"]["id_retrieval"]["gallery_size"] == 12
               for r in subset.values())
    for name in REFERENCE_ROWS:  # the fixed gallery: each pair's retrieval does not depend on the others scored
        mine = [(r["index"], r["id_retrieval/retrieved"], r["id_retrieval/top5"]) for r in rows if r["checkpoint"] == name]
        theirs = [(r["index"], r["id_retrieval/retrieved"], r["id_retrieval/top5"]) for r in subset_rows
                  if r["checkpoint"] == name]
        assert theirs == mine[:5], name


def test_reference_rows_fail_clearly_before_scoring(tmp_path):
    from swaplab.tasks.evaluate import evaluate

    def run(protocol: str, *overrides: str) -> None:
        extra = ["evaluation.reference_resolution=32"] if protocol == "synthetic_truth" else []
        evaluate(compose_config("eval", tmp_path, ["ckpt=[]", f"evaluation={protocol}", *extra, "device=cpu",
                                                   "evaluation.dataset.num_identities=4", *overrides]))

    with pytest.raises(ValueError, match=r"'true_swap' needs \['true_swap'\], which evaluation.dataset does not "
                                         r"provide \(SyntheticSwapDataset with true_swap: true"):
        run("synthetic_truth", "metric_experts=random", "evaluation.dataset.true_swap=false")
    with pytest.raises(ValueError, match="unknown reference 'copy_both'.*known: \\['copy_source'"):
        run("synthetic_truth", "metric_experts=random", "evaluation.references=[copy_both]")
    with pytest.raises(ValueError, match="reference rows alone .* needs the metric experts"):
        run("synthetic_truth")
    with pytest.raises(ValueError, match="evaluation.missing_faces must be one of \\['drop', 'fail'\\]"):
        run("synthetic_truth", "metric_experts=random", "+evaluation.missing_faces=skip")
    with pytest.raises(ValueError, match="ckpt=\\[\\] only with evaluation.references"):
        run("synthetic", "metric_experts=random")
    assert not (tmp_path / "results").exists()


@pytest.mark.slow  # a CLI process (Lightning and Hydra start-up) scoring a checkpoint and three references
def test_eval_cli_synthetic_truth_scores_a_checkpoint_beside_the_reference_rows(checkpoints, tmp_path):
    ckpt = checkpoints["faceshifter"]
    run_cli("eval.py", f"ckpt={ckpt}", *TRUTH_TINY, f"hydra.run.dir={tmp_path}", env={"OMP_NUM_THREADS": "1"})
    out = tmp_path / "results" / "synthetic_truth"
    summary = json.loads((out / "summary.json").read_text())
    names = [r["name"] for r in summary["checkpoints"]]
    assert names == ["FaceShifter:last", *REFERENCE_ROWS]
    assert [r["model"] for r in summary["checkpoints"]] == ["FaceShifter", "reference", "reference", "reference"]
    assert {r["resolution"] for r in summary["checkpoints"]} == {32} and summary["checkpoints"][1]["sha256"] is None
    table = table_numbers((out / "table.md").read_text())
    assert list(table) == names
    for r in summary["checkpoints"]:
        assert set(table[r["name"]]) == set(r["metrics"]) and np.isfinite(list(r["metrics"].values())).all()
    swap, truth = table["FaceShifter:last"], table["reference/true_swap"]
    assert truth["truth_psnr"] == 100.0 and swap["truth_psnr"] < truth["truth_psnr"]
    assert swap["truth_l1_face"] > truth["truth_l1_face"] == 0.0
    with open(out / "per_example.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["checkpoint"] for r in rows] == [n for n in names for _ in range(12)]
    plot = np.asarray(Image.open(out / "comparison.png").convert("RGB"))
    assert plot.shape[0] > 100 and plot.std() > 5


def test_benchmark_tiny_reports_throughput(capsys):
    module = load_benchmark("evaluation")
    result = module.main(["--tiny", "--device", "cpu"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["swaps"] == 16 and printed["swaps_per_second"] == result["swaps_per_second"] > 0
    assert {"id_retrieval", "pose_error", "ssim"} <= set(printed["metrics"])
