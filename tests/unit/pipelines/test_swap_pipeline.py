"""The inference pipeline: full photos and videos in, swapped photos and videos out."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from helpers import TINY, compose_config, load_benchmark, run_cli
from skimage.data import astronaut

from swaplab.experts.detection import Detections
from swaplab.faces.templates import get_template
from swaplab.imaging import to_uint8
from swaplab.pipelines import FaceSwapPipeline, NoFaceError, SwapOptions, swap_video
from swaplab.pipelines.blend import ellipse_mask, paste_back
from swaplab.pipelines.video import LandmarkSmoother
from swaplab.tasks.swap import swap


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("pipeline_run")
    run_cli("train.py", *TINY, "trainer.max_steps=1", "logger=none", "callbacks=[last_checkpoint]",
            f"hydra.run.dir={run_dir}")
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def pipe(checkpoint) -> FaceSwapPipeline:
    return FaceSwapPipeline.from_checkpoint(checkpoint)


def two_faces() -> np.ndarray:
    """A 160 x 320 frame: a large face on the left, a smaller, mirrored (so other-looking) one on the right."""
    face = cv2.resize(astronaut()[20:276, 100:356], (160, 160), interpolation=cv2.INTER_AREA)
    frame = np.zeros((160, 320, 3), np.uint8)
    frame[:, :160] = face
    frame[24:136, 184:296] = cv2.resize(face[:, ::-1], (112, 112), interpolation=cv2.INTER_AREA)
    return frame


def group_photo() -> tuple[np.ndarray, dict[str, tuple[slice, slice]]]:
    """A 300 x 640 composite of real photos: two people (the astronaut, large; the cameraman) and small
    distractors: the astronaut again as a small reflection, her face on its side (MTCNN scores it 0.87), and a
    cat, a coffee cup and a rocket (no detection). Returns the image and where each piece sits."""
    from skimage.data import camera, chelsea, coffee, rocket

    canvas = np.full((300, 640, 3), 70, np.uint8)
    pieces = {"astronaut": (astronaut()[20:276, 100:356], 0, 20, 260),
              "cameraman": (np.repeat(camera()[60:280, 130:350, None], 3, -1), 270, 60, 170),
              "reflection": (astronaut()[20:276, 356:100:-1], 450, 10, 64),
              "on its side": (np.rot90(astronaut()[20:276, 100:356]), 450, 110, 96),
              "cat": (chelsea()[30:250, 100:320], 560, 20, 70),
              "cup": (coffee()[50:350, 150:450], 560, 110, 70),
              "rocket": (rocket()[100:300, 150:350], 450, 220, 70)}
    regions = {}
    for name, (image, x, y, side) in pieces.items():
        regions[name] = np.s_[y : y + side, x : x + side]
        canvas[regions[name]] = cv2.resize(np.ascontiguousarray(image), (side, side), interpolation=cv2.INTER_AREA)
    return canvas, regions


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != b).any(-1)


def test_photo_changes_only_the_dilated_face_region(pipe):
    photo = astronaut()
    out = pipe(photo, photo)
    result = to_uint8(out.swap)[0].numpy()
    assert result.shape == photo.shape and out.extras["faces"].tolist() == [1]
    (x1, y1, x2, y2), = pipe.detect(photo[None])[0].boxes
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)  # the box, dilated 2x
    ys, xs = np.mgrid[: photo.shape[0], : photo.shape[1]]
    dilated = (abs(xs - cx) <= half) & (abs(ys - cy) <= half)
    diff = changed(result, photo)
    assert not diff[~dilated].any()
    box = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
    assert diff[box].mean() > 0.5  # the face itself was replaced


def test_face_selection(pipe):
    frame = two_faces()
    regions = {"left": np.s_[:, :160], "right": np.s_[:, 160:]}

    def swapped_sides(**options) -> set[str]:
        pipe.options = SwapOptions(**options)
        result = to_uint8(pipe(frame, frame).swap)[0].numpy()
        return {side for side, r in regions.items() if changed(result[r], frame[r]).any()}

    assert swapped_sides(select="all") == {"left", "right"}
    assert swapped_sides(select="largest") == {"left"}
    assert swapped_sides(select="index", index=1) == {"right"}
    assert swapped_sides(select="index", index=2) == set()
    pipe.options = SwapOptions(select="reference")
    pipe.identity = pipe.model.experts.identity
    pipe.set_reference(np.ascontiguousarray(frame[:, :160][:, ::-1]))  # the right one, in another photo
    assert swapped_sides(select="reference") == {"right"}
    pipe.options = SwapOptions()


def test_blend_modes_and_masks_keep_the_frame_outside(pipe):
    photo = astronaut()
    for options in ({"blend": "poisson"}, {"mask": "learned", "colour": False}):
        pipe.options = SwapOptions(**options)
        result = to_uint8(pipe(photo, photo).swap)[0].numpy()
        assert changed(result, photo).any() and not changed(result[:, :100], photo[:, :100]).any()
    pipe.options = SwapOptions()


def test_parsing_mask_is_the_parsers_face_region(pipe):
    """mask=parsing takes the parser's B x 1 x S x S face mask (a stub: the crop's upper half is face)."""
    class UpperHalfFace:
        def masks(self, crops):
            face = torch.zeros(len(crops), 1, *crops.shape[-2:])
            face[..., : crops.shape[-2] // 2, :] = 1
            return {"face": face}

    side = pipe.template.size
    crops = torch.zeros(2, 3, side, side)
    pipe.options, pipe.parser = SwapOptions(mask="parsing"), UpperHalfFace()
    try:
        mask = pipe.masks(pipe.model(crops, crops), crops)
    finally:
        pipe.options, pipe.parser = SwapOptions(), None
    assert mask.shape == (2, 1, side, side)
    top, bottom = mask[..., : side * 3 // 8, :], mask[..., side * 5 // 8 :, :]
    assert top.min() > 0.99 and bottom.max() < 0.01  # feathered only at the border


def test_paste_back_known_answer():
    frames = torch.zeros(2, 3, 8, 10)
    crops = torch.ones(1, 3, 4, 4)
    shift = torch.tensor([[[1.0, 0, -3], [0, 1, -2]]])  # the crop is frame pixels x 3..6, y 2..5
    out = paste_back(frames, crops, torch.ones(1, 1, 4, 4), shift, torch.tensor([1]))
    assert out[0].abs().max() == 0
    assert torch.allclose(out[1, :, 2:6, 3:7], torch.ones(3, 4, 4)) and out[1].sum() == 3 * 16
    ellipse = ellipse_mask(get_template("faceshifter_256", 64), feather=0.1)[0, 0]
    assert ellipse[0, 0] == 0 and ellipse[36, 32] == 1  # corners out, the nose in


def test_bad_options_and_inputs(pipe):
    with pytest.raises(ValueError, match="mask must be one of"):
        SwapOptions(mask="box")
    with pytest.raises(ValueError, match="select must be one of"):
        SwapOptions(select="biggest")
    with pytest.raises(NoFaceError, match="no face"):
        pipe.face_crop(np.full((64, 64, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        pipe(None, np.zeros((64, 64), np.float32))
    blank = np.full((96, 96, 3), 90, np.uint8)
    out = pipe(astronaut(), blank)
    assert out.extras["frames_without_face"] == 1 and torch.equal(to_uint8(out.swap)[0], torch.from_numpy(blank))


def test_landmark_smoothing_follows_slow_motion_and_restarts_on_jumps():
    smooth = LandmarkSmoother(0.5)
    points = np.array([[10.0, 10], [20, 10], [15, 15], [11, 20], [19, 20]])
    assert np.allclose(smooth(points), points)
    assert np.allclose(smooth(points + 2), points + 1)  # halfway
    assert np.allclose(smooth(points + 50), points + 50)  # a cut: no blending across it
    with pytest.raises(ValueError, match="smoothing"):
        LandmarkSmoother(1.0)


def write_video(path: Path, blank_frames: set[int], frames: int = 8, fps: int = 12, audio: bool = True) -> None:
    face = cv2.resize(astronaut()[20:276, 100:356], (96, 96), interpolation=cv2.INTER_AREA)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264rgb", rate=fps)
        video.width, video.height, video.pix_fmt, video.options = 128, 96, "rgb24", {"crf": "0"}
        sound = container.add_stream("aac", rate=16000) if audio else None
        for i in range(frames):
            frame = np.full((96, 128, 3), 30, np.uint8)
            if i not in blank_frames:
                frame[:, 2 * i : 2 * i + 96] = face
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, "rgb24")))
        container.mux(video.encode(None))
        if sound is not None:
            t = np.arange(16000 * frames // fps) / 16000
            wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for k in range(0, wave.shape[1], 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, k : k + 1024]), "fltp", "mono")
                chunk.sample_rate = 16000
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))


def read_video(path: Path) -> tuple[list[np.ndarray], Fraction, float | None]:
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
        audio = container.streams.audio[0] if container.streams.audio else None
        seconds = float(audio.duration * audio.time_base) if audio is not None else None
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)], rate, seconds


def test_video_keeps_frames_fps_audio_and_passes_faceless_frames(pipe, tmp_path):
    write_video(tmp_path / "in.mp4", blank_frames={3, 4})
    summary = swap_video(pipe, astronaut(), tmp_path / "in.mp4", tmp_path / "out.mp4", batch_size=3,
                         progress=False, codec="libx264rgb", crf=0)
    before, rate_in, audio_in = read_video(tmp_path / "in.mp4")
    after, rate_out, audio_out = read_video(tmp_path / "out.mp4")
    assert len(after) == len(before) == summary.frames == 8 and rate_out == rate_in == 12
    assert audio_in is not None and audio_out == pytest.approx(audio_in)
    assert summary.frames_without_face == 2 and summary.faces_swapped == 6
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        assert changed(a, b).any() == (i not in (3, 4))  # lossless codec: faceless frames are bit-identical
    swap_video(pipe, astronaut(), tmp_path / "in.mp4", tmp_path / "preview.mp4", preview=True, progress=False)
    side_by_side, _, _ = read_video(tmp_path / "preview.mp4")
    assert len(side_by_side) == 8 and side_by_side[0].shape == (96, 256, 3)


@pytest.mark.slow
def test_swap_cli_on_photos_and_videos(checkpoint, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "astronaut.jpg"), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(inputs / "wall.png"), np.full((64, 64, 3), 200, np.uint8))
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    write_video(inputs / "clip.mp4", blank_frames={1}, frames=4, audio=False)
    out = tmp_path / "out"
    run_cli("swap.py", f"ckpt={checkpoint}", f"source={inputs / 'astronaut.jpg'}", f"target={inputs}",
            f"output={out}", "progress=false", f"hydra.run.dir={tmp_path / 'run'}")
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["results"]) == ["astronaut.jpg", "clip.mp4", "wall.png"]
    assert summary["skipped"] == {"unreadable image (UnidentifiedImageError)": 1, "no face": 1}
    assert summary["results"]["clip.mp4"]["frames"] == 4 and summary["results"]["clip.mp4"]["frames_without_face"] == 1
    assert cv2.imread(str(out / "wall_swap.png")).shape == (64, 64, 3)
    common = [f"ckpt={checkpoint}", f"source={inputs / 'astronaut.jpg'}", f"output={tmp_path / 'out2'}"]
    cfg = compose_config("swap", tmp_path, [*common, f"target={inputs / 'wall.png'}", "on_no_face=error"])
    with pytest.raises(NoFaceError, match="no face to swap in .*wall.png"):
        swap(cfg)
    cfg = compose_config("swap", tmp_path, [*common, f"target={inputs / 'broken.jpg'}"])
    with pytest.raises(ValueError, match="cannot read image .*broken.jpg"):
        swap(cfg)


def test_inference_benchmark_tiny_reports_json(capsys):
    module = load_benchmark("inference")
    result = module.main(["--tiny", "--device", "cpu"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == result and printed["generator"]["swaps"] == 16 and printed["generator"]["swaps_per_second"] > 0
    assert printed["video"]["frames"] == 8 and printed["video"]["faces_swapped"] == 8
    assert printed["video"]["frames_per_second"] > 0


def test_output_naming_a_file_writes_that_file_and_anything_else_a_folder(checkpoint, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "astronaut.jpg"), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(inputs / "wall.png"), np.full((64, 64, 3), 200, np.uint8))
    write_video(inputs / "clip.mp4", blank_frames=set(), frames=2, audio=False)

    def run(target: Path, output: Path, *extra: str) -> dict:
        return swap(compose_config("swap", tmp_path, [f"ckpt={checkpoint}", f"source={inputs / 'astronaut.jpg'}",
                                                      f"target={target}", f"output={output}", "progress=false",
                                                      *extra]))

    summary = run(inputs / "astronaut.jpg", tmp_path / "out" / "result.png")
    assert (tmp_path / "out" / "result.png").is_file() and sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "result.png", "result.summary.json"]
    assert summary["outputs"] == [str(tmp_path / "out" / "result.png")]
    assert cv2.imread(str(tmp_path / "out" / "result.png")).shape == astronaut().shape
    run(inputs / "clip.mp4", tmp_path / "out" / "result.mov")
    assert len(read_video(tmp_path / "out" / "result.mov")[0]) == 2
    run(inputs / "wall.png", tmp_path / "aligned" / "crop.jpg", "aligned=true")
    assert cv2.imread(str(tmp_path / "aligned" / "crop.jpg")).shape == (32, 32, 3)  # the model's side

    summary = run(inputs / "astronaut.jpg", tmp_path / "folder")  # no suffix: a folder, even for one input
    assert summary["outputs"] == [str(tmp_path / "folder" / "astronaut_swap.png")]
    assert (tmp_path / "folder" / "summary.json").is_file()
    with pytest.raises(ValueError, match="names one file, but the target holds 3 inputs"):
        run(inputs, tmp_path / "many.png")
    with pytest.raises(ValueError, match="is an image file, but the target clip.mp4 is a video"):
        run(inputs / "clip.mp4", tmp_path / "frame.png")
    assert not (tmp_path / "many.png").exists() and not (tmp_path / "frame.png").exists()


def test_screening_rejects_low_scores_and_small_boxes_by_first_reason():
    pipe = FaceSwapPipeline(None, None, get_template("faceshifter_256"), SwapOptions())
    sides, scores = np.array([200, 50, 25, 800, 100]), np.array([0.99, 0.99, 0.99, 0.5, 0.96])
    boxes = np.stack([np.zeros(5), np.zeros(5), sides, sides * 1.3], 1).astype(np.float32)  # shorter side: width
    reasons = pipe.screen(Detections(boxes, scores, np.zeros((5, 5, 2))), image_side=1000)
    # 50 < 0.3 x 200 (the largest CONFIDENT face: the 800 box scored 0.5); 25 < 0.03 x 1000 comes first
    assert reasons.tolist() == ["", "smaller than 0.3 of the largest face", "smaller than 0.03 of the image",
                                "score below 0.95", ""]


def test_group_photo_swaps_the_people_and_not_the_distractors(checkpoint, tmp_path):
    photo, regions = group_photo()
    cv2.imwrite(str(tmp_path / "group.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))

    def run(*options: str) -> tuple[dict, np.ndarray]:
        cfg = compose_config("swap", tmp_path, [f"ckpt={checkpoint}", f"source={tmp_path / 'group.png'}",
                                                f"target={tmp_path / 'group.png'}", f"output={tmp_path / 'out.png'}",
                                                "pipeline.select=all", *options])
        summary = swap(cfg)
        return summary, cv2.cvtColor(cv2.imread(str(tmp_path / "out.png")), cv2.COLOR_BGR2RGB)

    summary, result = run()
    counts = {"faces_found": 4, "faces_swapped": 2,
              "faces_rejected": {"score below 0.95": 1, "smaller than 0.3 of the largest face": 1}}
    assert summary["faces"] == counts and summary["results"]["group.png"] == {"output": str(tmp_path / "out.png"),
                                                                              **counts}
    diff = changed(result, photo)
    people = np.zeros(diff.shape, bool)
    for name in ("astronaut", "cameraman"):
        assert diff[regions[name]].mean() > 0.05, name
        people[regions[name]] = True
    assert not diff[~people].any()  # distractors and background keep their exact pixels
    summary, _ = run("pipeline.min_score=0", "pipeline.min_face_of_largest=0")
    assert summary["faces"]["faces_swapped"] == 4  # the distractors are found: the screening is what rejects them


def test_fsgan_takes_a_folder_of_source_views_and_other_methods_refuse_one(checkpoint, tmp_path, monkeypatch):
    """swap.py source=<folder>: FSGAN's face view interpolation over every photo with a face (others counted);
    a method without it refuses a folder in one line."""
    from skimage.data import camera
    from test_swap_behaviour import FSGAN_TINY

    from swaplab.models.fsgan import FSGAN

    blended_views = []  # the number of views each swap_views call blends from
    interpolate = FSGAN.swap_views
    monkeypatch.setattr(FSGAN, "swap_views", lambda self, views, *args: blended_views.append(len(views))
                        or interpolate(self, views, *args))

    run_dir = tmp_path / "fsgan_run"
    run_cli("train.py", *FSGAN_TINY, "model.stage=blending", "trainer.max_steps=1", "logger=none",
            "callbacks=[last_checkpoint]", f"hydra.run.dir={run_dir}")
    views = tmp_path / "views"
    views.mkdir()
    face = astronaut()[20:276, 100:356]
    for name, image in (("front.png", face), ("mirror.png", face[:, ::-1]), ("scaled.png", cv2.resize(face, (200, 200))),
                        ("wall.png", np.full((64, 64, 3), 90, np.uint8)), ("scene.png", np.repeat(camera()[:64, :64, None], 3, -1))):
        cv2.imwrite(str(views / name), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    target = tmp_path / "target.png"
    cv2.imwrite(str(target), cv2.cvtColor(two_faces(), cv2.COLOR_RGB2BGR))
    common = [f"target={target}", "progress=false"]
    cfg = compose_config("swap", tmp_path, [f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", f"source={views}",
                                            f"output={tmp_path / 'out'}", *common])
    summary = swap(cfg)
    assert summary["source_views"] == {"views": 3, "skipped": {"no face": 2}}
    assert blended_views and set(blended_views) == {3}  # every face swapped through the view interpolation
    assert summary["results"]["target.png"]["faces_swapped"] >= 1
    cfg = compose_config("swap", tmp_path, [f"ckpt={checkpoint}", f"source={views}", f"output={tmp_path / 'o2'}",
                                            *common])
    with pytest.raises(ValueError, match="face view interpolation; FaceShifter takes one photo"):
        swap(cfg)
