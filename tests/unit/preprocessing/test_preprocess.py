"""preprocess.py on real photos (skimage's astronaut, upscaled LFW faces) and broken inputs: crops land on the
template, crops of two templates convert into each other, bad inputs are skipped and counted, re-runs write
nothing, interrupted shards are redone."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from helpers import compose_config, run_cli
from PIL import Image

from swaplab.data.prepare import prepare_batch
from swaplab.data.store import FaceStore, PreprocessedFacePairs, complete_shards, shard_prefix
from swaplab.errors import ConfigError
from swaplab.experts.detection import MTCNNDetector
from swaplab.faces.templates import ARCFACE_112, conversion_matrix, convert_crops, get_template
from swaplab.io.video import evenly_spaced, read_video_frames
from swaplab.tasks.preprocess import preprocess

LFW = {"alice": (0, 10, 20), "bob": (40, 60, 70)}  # LFW subset faces MTCNN finds (scores > 0.95)
GOOD = ["alice/0.png", "alice/1.png", "alice/2.png", "astronaut.jpg", "bob/0.jpg", "bob/1.jpg", "bob/2.jpg",
        "clip.avi"]
BAD = {"corrupt.jpg": "unreadable image", "empty.jpg": "unreadable image", "non_face.png": "no face detected",
       "cut.avi": "truncated video", "cut.mp4": "unopenable video"}
FRAMES = 5  # evenly spaced frames per video


def lfw_photo(gray: np.ndarray, size: int = 120, pad: int = 40) -> np.ndarray:
    """A 25 x 25 LFW crop upscaled and padded with its border (as in test_experts_detection)."""
    img = cv2.resize((gray * 255).round().astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return np.repeat(img[..., None], 3, axis=2)


def write_video(path: Path, frames: list[np.ndarray], fourcc: str) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Photos in identity folders, a loose photo, a short video, and one broken input of each kind."""
    root = tmp_path_factory.mktemp("inputs")
    lfw = skimage.data.lfw_subset()
    for name, indices in LFW.items():
        (root / name).mkdir()
        for k, i in enumerate(indices):
            Image.fromarray(lfw_photo(lfw[i])).save(root / name / f"{k}.{'png' if name == 'alice' else 'jpg'}")
    Image.fromarray(skimage.data.astronaut()).save(root / "astronaut.jpg", quality=95)
    write_video(root / "clip.avi", [lfw_photo(g) for g in lfw[:30]], "MJPG")

    jpeg = (root / "astronaut.jpg").read_bytes()
    start_of_scan = jpeg.index(b"\xff\xda")
    rng = np.random.default_rng(0)
    garbage = rng.integers(0, 255, 2000, dtype=np.uint8).tobytes().replace(b"\xff", b"\x00")
    (root / "corrupt.jpg").write_bytes(jpeg[: start_of_scan + 20] + garbage)  # valid headers, broken data
    (root / "empty.jpg").write_bytes(b"")
    Image.fromarray(lfw_photo(lfw[150])).save(root / "non_face.png")  # LFW subset [100:] are non-faces
    avi = (root / "clip.avi").read_bytes()
    (root / "cut.avi").write_bytes(avi[: len(avi) // 2])  # header announces 30 frames, half decode
    write_video(root / "whole.mp4", [lfw_photo(g) for g in lfw[:10]], "mp4v")
    mp4 = (root / "whole.mp4").read_bytes()
    (root / "whole.mp4").unlink()
    (root / "cut.mp4").write_bytes(mp4[: len(mp4) // 2])  # cut before its index (moov atom)
    return root


def run_preprocess(tmp_path: Path, input_path: Path, output: Path, *overrides: str) -> dict:
    cfg = compose_config("preprocess", tmp_path, [f"input={input_path}", f"output={output}", f"frames={FRAMES}",
                                                  "progress=false", *overrides])
    return preprocess(cfg)


@pytest.fixture(scope="module")
def stores(inputs, tmp_path_factory) -> dict[str, Path]:
    """The inputs preprocessed with three templates (same detections: MTCNN 5 points)."""
    out = {}
    for template in ("arcface_112", "faceshifter_256", "ffhq_256"):
        work = tmp_path_factory.mktemp(template)
        summary = run_preprocess(work, inputs, work / "store", f"template={template}",
                                 f"num_workers={2 if template == 'arcface_112' else 0}")
        out[template] = work / "store"
        out[template + "_summary"] = summary
    return out


def rows_by_key(store: FaceStore) -> dict[tuple[str, int], int]:
    return {(r["source"], r["frame"]): i for i, r in enumerate(store.rows)}


def apply(matrices: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ np.swapaxes(matrices[..., :, :2], -1, -2) + matrices[..., None, :, 2]


def test_video_frames_are_read_evenly_spaced_and_cut_videos_are_rejected(inputs):
    frames, count = read_video_frames(inputs / "clip.avi", lambda n: evenly_spaced(n, FRAMES))
    assert count == 30 and len(frames) == FRAMES and frames[0].shape == (200, 200, 3)
    assert evenly_spaced(30, FRAMES).tolist() == [0, 7, 14, 22, 29] and evenly_spaced(3, 10).tolist() == [0, 1, 2]
    all_frames, _ = read_video_frames(inputs / "clip.avi")
    for k, i in enumerate(evenly_spaced(30, FRAMES)):
        assert np.array_equal(frames[k], all_frames[i])  # seeking and stepping give the same frames
    from swaplab.io.video import VideoReadError

    for name, reason in (("cut.avi", "truncated video"), ("cut.mp4", "unopenable video")):
        with pytest.raises(VideoReadError) as err:
            read_video_frames(inputs / name, [0])
        assert err.value.reason == reason and name in str(err.value)


def test_crops_put_the_five_landmarks_on_the_template(stores):
    """MTCNN run again on the 112 px ArcFace crops (upscaled x2, grey margin) finds the landmarks where the
    template puts them. MTCNN's own landmark noise between a full frame and a crop is ~2-3 px at 112."""
    store = FaceStore(stores["arcface_112"])
    crops = store.read_images(np.arange(len(store))).numpy()
    up, pad = 2, 56
    big = [cv2.copyMakeBorder(cv2.resize(c, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC), pad, pad, pad,
                              pad, cv2.BORDER_CONSTANT, value=(128, 128, 128)) for c in crops]
    found = MTCNNDetector.build(min_face_size=40)(big)
    errors = []
    for det in found:
        assert len(det) >= 1
        points = (det.landmarks[0] - pad + 0.5) / up - 0.5
        errors.append(np.linalg.norm(points - ARCFACE_112, axis=1).mean())
    errors = np.array(errors)
    print(f"landmark error at 112 px over {len(errors)} crops: mean {errors.mean():.2f}, median "
          f"{np.median(errors):.2f}, max {errors.max():.2f}")
    assert len(errors) == len(GOOD) - 1 + FRAMES
    assert errors.mean() < 3.0 and np.median(errors) < 3.0 and errors.max() < 6.0


def test_crops_of_two_templates_convert_into_each_other(stores):
    arc, fs, ffhq = (FaceStore(stores[t]) for t in ("arcface_112", "faceshifter_256", "ffhq_256"))
    keys = rows_by_key(arc)
    assert rows_by_key(fs).keys() == keys.keys() == rows_by_key(ffhq).keys()
    direct_images = arc.read_images(np.arange(len(arc))).permute(0, 3, 1, 2).float()
    direct_points = apply(arc.matrices(), arc.landmarks())
    for other, name in ((fs, "faceshifter_256"), (ffhq, "ffhq_256")):
        order = np.array([rows_by_key(other)[k] for k in keys])
        landmarks = other.landmarks()[order]
        assert np.abs(landmarks - arc.landmarks()).max() < 0.01  # the same detections
        matrices = other.matrices()[order]
        np.testing.assert_allclose(matrices, get_template(name).matrix(landmarks), atol=1e-6)
        in_crop = apply(matrices, landmarks)
        if name == "ffhq_256":  # the FFHQ recipe depends on the face: exact per-face conversion
            conversion = conversion_matrix(name, "arcface_112", landmarks=in_crop)
        else:  # between similarity templates one fixed transform is exact
            conversion = np.broadcast_to(conversion_matrix(name, "arcface_112"), (len(order), 2, 3))
        point_error = np.linalg.norm(apply(conversion, in_crop) - direct_points, axis=-1).max()
        images = other.read_images(order).permute(0, 3, 1, 2).float()
        converted = convert_crops(images, name, "arcface_112",
                                  landmarks=in_crop if name == "ffhq_256" else None)
        pixel_error = (converted - direct_images).abs().mean((1, 2, 3))
        print(f"{name} -> arcface_112: landmarks within {point_error:.2e} px, mean abs pixel difference "
              f"{pixel_error.mean():.2f} (max over crops {pixel_error.max():.2f}) of 255")
        assert point_error < 1.0
        assert pixel_error.max() < 8.0


def test_bad_inputs_are_skipped_and_counted(stores):
    summary = stores["arcface_112_summary"]
    run = summary["run"]
    assert run["units"] == len(GOOD) + len(BAD) and run["ok"] == len(GOOD)
    expected = {}
    for reason in BAD.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert run["skipped"] == expected
    assert json.loads((stores["arcface_112"] / "summary.json").read_text())["total"]["skipped"] == expected
    store = FaceStore(stores["arcface_112"])
    assert sorted(set(store.sources)) == GOOD
    done = json.loads(Path(f"{shard_prefix(stores['arcface_112'], 0)}.done.json").read_text())
    status = {u["source"]: u["status"] for u in done["units"]}
    assert status == {**dict.fromkeys(GOOD, "ok"), **BAD}
    # identities: first folder, none for files in the input root; video frames evenly spaced
    identity = {r["source"]: r["identity"] for r in store.rows}
    assert identity["alice/1.png"] == "alice" and identity["bob/2.jpg"] == "bob"
    assert identity["astronaut.jpg"] is None and store.identity_names == ["alice", "bob"]
    video_frames = sorted(r["frame"] for r in store.rows if r["source"] == "clip.avi")
    assert video_frames == evenly_spaced(30, FRAMES).tolist()
    assert all(r["frame"] == -1 for r in store.rows if r["source"] != "clip.avi")


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root with its modification time (and size for files)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size if p.is_file() else 0)
            for p in root.rglob("*")}


def test_rerun_writes_nothing(stores, inputs, tmp_path):
    before = tree(stores["faceshifter_256"])
    summary = run_preprocess(tmp_path, inputs, stores["faceshifter_256"], "template=faceshifter_256")
    assert summary["run"]["units"] == 0 and summary["run"]["already_done"] == len(GOOD) + len(BAD)
    assert summary["total"]["faces"] == len(GOOD) - 1 + FRAMES
    assert tree(stores["faceshifter_256"]) == before
    with pytest.raises(ValueError, match="other settings"):  # another template into the same store
        run_preprocess(tmp_path, inputs, stores["faceshifter_256"], "template=arcface_112")


def test_an_interrupted_shard_is_redone_and_the_others_kept(inputs, tmp_path):
    out = tmp_path / "store"
    run_preprocess(tmp_path, inputs, out, "template=arcface_112", "shard_size=4", "num_workers=0")
    shards = complete_shards(out)
    assert len(shards) >= 3
    first = FaceStore(out)
    last = shards[-1]
    lost = json.loads(Path(f"{shard_prefix(out, last)}.done.json").read_text())["units"]
    Path(f"{shard_prefix(out, last)}.done.json").unlink()  # the run died before finishing this shard
    Path(f"{shard_prefix(out, last)}.manifest.jsonl.tmp").write_text("{}")  # and left a temporary file
    kept = {k: v for k, v in tree(out).items()
            if not k.startswith(f"shards/shard-{last:05d}") and k not in ("summary.json", "shards")}

    summary = run_preprocess(tmp_path, inputs, out, "template=arcface_112", "shard_size=4", "num_workers=0")
    assert summary["run"]["units"] == len(lost)
    after = tree(out)
    assert {k: after[k] for k in kept} == kept  # complete shards untouched
    assert not [k for k in after if k.endswith(".tmp")]
    again = FaceStore(out)
    assert sorted(zip(again.sources, again.frames.tolist(), strict=True)) == sorted(
        zip(first.sources, first.frames.tolist(), strict=True))
    assert torch.equal(again.read_images(np.arange(len(again))), first.read_images(np.arange(len(first))))


def test_parsing_labels_and_dlib_landmarks(inputs, tmp_path):
    """Random-weight parser (offline experts): the labels of one canonical parse, warped into two templates,
    agree; dlib 68 landmarks drive the FFHQ recipe; the pair dataset serves 3-class masks."""
    few = tmp_path / "few"
    few.mkdir()
    for name in ("astronaut.jpg", "alice/0.png"):
        (few / name.replace("/", "_")).write_bytes((inputs / name).read_bytes())
    labels = {}
    for template in ("faceshifter_256", "arcface_112"):
        run_preprocess(tmp_path, few, tmp_path / template, f"template={template}", "parsing=true", "codec=png",
                       "num_workers=0")
        store = FaceStore(tmp_path / template)
        assert store.meta["labels"] and len(store.meta["label_classes"]) == 19
        labels[template] = store.read_labels(np.arange(len(store)))
        assert labels[template].shape == (2, store.size, store.size)
    m = conversion_matrix("faceshifter_256", "arcface_112")
    moved = np.stack([cv2.warpAffine(x, m, (112, 112), flags=cv2.INTER_NEAREST) for x in
                      labels["faceshifter_256"].numpy()])
    agreement = (moved == labels["arcface_112"].numpy()).mean()
    print(f"parsing labels: faceshifter_256 moved to arcface_112 agree on {agreement:.1%} of pixels")
    assert agreement > 0.9 and len(np.unique(moved)) > 2

    run_preprocess(tmp_path, few, tmp_path / "ffhq", "template=ffhq_256", "landmarks=dlib68", "parsing=true",
                   "identity=file", "size=128", "num_workers=0")
    store = FaceStore(tmp_path / "ffhq")
    marks = np.array([r["landmarks68"] for r in store.rows])
    assert store.size == 128 and marks.shape == (2, 68, 2)
    np.testing.assert_allclose(store.matrices(), get_template("ffhq_256", 128).matrix(marks), atol=1e-3)
    assert store.identity_names == ["alice_0", "astronaut"]
    batch = prepare_batch(PreprocessedFacePairs(tmp_path / "ffhq", resolution=64).__getitems__([0, 1]))
    assert batch["target_mask"].shape == (2, 64, 64) and set(batch["target_mask"].unique().tolist()) <= {0, 1, 2}


def test_bad_settings_fail_at_start_up_with_one_line(inputs, tmp_path):
    cases = {"template=nope": "known: [", "codec=webp": "codec must be one of",
             "faces=some": "faces must be one of", "frames=0": "frames must be"}
    for override, expected in cases.items():
        cfg = compose_config("preprocess", tmp_path, [f"input={inputs}", f"output={tmp_path / 'o'}", override])
        with pytest.raises(ConfigError) as err:
            preprocess(cfg)
        assert expected in str(err.value) and "\n" not in str(err.value)
    cfg = compose_config("preprocess", tmp_path, [f"input={tmp_path / 'missing'}", f"output={tmp_path / 'o'}"])
    with pytest.raises(ConfigError, match="does not exist"):
        preprocess(cfg)
    assert not (tmp_path / "o").exists()


def test_cli_preprocesses_a_folder(inputs, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("alice/1.png", "bob/1.jpg"):
        (folder / name.split("/")[0]).mkdir()
        (folder / name).write_bytes((inputs / name).read_bytes())
    run_cli("preprocess.py", f"input={folder}", f"output={tmp_path / 'store'}", "template=arcface_112",
            "num_workers=0", f"hydra.run.dir={tmp_path / 'run'}")
    store = FaceStore(tmp_path / "store")
    assert len(store) == 2 and store.identity_names == ["alice", "bob"] and store.size == 112
    summary = json.loads((tmp_path / "store" / "summary.json").read_text())
    assert summary["total"]["faces"] == 2 and summary["run"]["skipped"] == {}
