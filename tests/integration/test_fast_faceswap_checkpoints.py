"""Fast Face-swap checkpoints of both experiments through swap.py (photo, video, aligned crops) and eval.py: faces
are aligned to the checkpoint's own frontal 68-point template, and no source is ever asked for."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import compose_config
from skimage.data import astronaut
from test_fast_faceswap import SMALL_NET
from test_swap_pipeline import changed, read_video, write_video

from swaplab.faces.templates import FRONTAL, get_template
from swaplab.models.loading import load_swap_model
from swaplab.pipelines import FaceSwapPipeline
from swaplab.tasks.evaluate import evaluate, protocol_dataset
from swaplab.tasks.swap import swap
from swaplab.tasks.train import train

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_RUN = ["data.resolution=32", "data.batch_size=2", "data.num_workers=0", "data.train.num_identities=4",
            "data.train.images_per_identity=1", "data.val.num_identities=2", "model.style_set.num_images=4",
            "model.n_best=2", "experts=random", f"model.generator.branch_channels={SMALL_NET['branch_channels']}",
            f"model.generator.join_channels=[{','.join(map(str, SMALL_NET['join_channels']))}]",
            "logger=none", "callbacks=[last_checkpoint]", "trainer.max_steps=1", "trainer.limit_val_batches=1"]
EXPERIMENTS = {
    "fast_faceswap_synthetic": ["experiment=fast_faceswap_synthetic"],
    # the paper's network, losses and paste-back on procedural content faces and a procedural style person
    "fast_faceswap_paper": ["experiment=fast_faceswap_paper", "data=synthetic", "data.wrap.landmarks=ground_truth",
                            "model.style_set.source=synthetic", "~callbacks.image_grid"],
}


@pytest.fixture(scope="module", params=sorted(EXPERIMENTS))
def checkpoint(request, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp(request.param)
    train(compose_config("train", run_dir, [*EXPERIMENTS[request.param], *TINY_RUN]))
    return run_dir / "checkpoints" / "last.ckpt"


def swap_config(tmp_path: Path, checkpoint: Path, target: Path, output: Path, *extra: str):
    return compose_config("swap", tmp_path, [f"ckpt={checkpoint}", f"target={target}", f"output={output}",
                                             "progress=false", *extra])  # no source=


def test_swap_aligns_photos_and_videos_to_the_checkpoints_frontal_template_without_a_source(checkpoint, tmp_path):
    photo = astronaut()
    cv2.imwrite(str(tmp_path / "photo.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    write_video(tmp_path / "clip.mp4", blank_frames={1}, frames=3, audio=False)

    _, run_cfg = load_swap_model(checkpoint)
    assert run_cfg.data.template == FRONTAL
    pipe = FaceSwapPipeline.from_checkpoint(checkpoint)
    assert pipe.template.name == FRONTAL and pipe.template.size == 32
    # the crop's 68 points land on the frontal reference: the affine fit of dlib's points, not a 5-point template
    (found,), _ = pipe.find_faces(photo[None])
    points = found.landmarks[0]
    matrix = pipe.template.matrix(points)
    assert points.shape == (68, 2)
    assert np.abs(points @ matrix[:, :2].T + matrix[:, 2] - get_template(FRONTAL, 32).reference).mean() < 0.03 * 32

    summary = swap(swap_config(tmp_path, checkpoint, tmp_path / "photo.png", tmp_path / "out" / "photo.png"))
    assert summary["faces"]["faces_swapped"] == 1
    assert changed(cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "photo.png")), cv2.COLOR_BGR2RGB), photo).any()
    summary = swap(swap_config(tmp_path, checkpoint, tmp_path / "clip.mp4", tmp_path / "out" / "clip.mp4"))
    assert summary["results"]["clip.mp4"]["frames"] == 3 and summary["faces"]["faces_swapped"] == 2
    assert len(read_video(tmp_path / "out" / "clip.mp4")[0]) == 3

    crop = cv2.resize(photo[20:276, 100:356], (32, 32), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / "crop.png"), crop)
    summary = swap(swap_config(tmp_path, checkpoint, tmp_path / "crop.png", tmp_path / "out" / "crop.png",
                               "aligned=true"))
    assert summary["outputs"] == [str(tmp_path / "out" / "crop.png")]


def test_eval_serves_the_checkpoint_its_frontal_crops_and_scores_it(checkpoint, tmp_path):
    cfg = compose_config("eval", tmp_path, [
        f"ckpt={checkpoint}", "evaluation=synthetic", "evaluation.max_pairs=4", "evaluation.batch_size=4",
        "device=cpu", *(f"~evaluation.metrics.{m}" for m in ("id_retrieval", "id_similarity", "pose_error",
                                                              "pose_error_gt", "pose_expert_error",
                                                              "expression_error", "shape_error", "lpips"))])
    _, run_cfg = load_swap_model(checkpoint)
    pairs = protocol_dataset(cfg.evaluation, run_cfg).__getitems__([0, 1])
    reference = torch.from_numpy(get_template(FRONTAL, 32).reference).float()
    assert (pairs["target_landmarks"] - reference).abs().mean() < 0.02 * 32  # aligned by their 68 points, as trained
    summary = evaluate(cfg)
    (result,) = summary["checkpoints"]
    assert result["num_examples"] == 4 and np.isfinite(result["metrics"]["ssim"])
