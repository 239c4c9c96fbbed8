"""Preprocessing: images and videos -> detected, aligned (and optionally parsed) face crops in a `FaceStore`.

Units of work are the input files (sorted paths relative to the input root). Worker processes decode them
(a video in chunks of its selected frames); the main process detects faces in batches, picks faces, fits the
template, crops and writes shards. A unit never spans shards and is done once a shard's done.json lists
it: a re-run skips done units (and writes nothing when nothing is left), and units of a shard that never
got its done.json (an interrupted run) are redone into a new shard.

Parsing labels: the parser expects canonical (faceshifter_256) crops, so each face is also cut from the full
image with the canonical template's matrix (no border padding inside the face context), parsed, and the
label map is warped into the stored crop with the composite matrix (stored <- image <- canonical) by
nearest sampling; pixels outside the canonical crop are background.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from swaplab.data import store as st
from swaplab.faces.landmarks import five_points
from swaplab.faces.parsing import CELEBAMASK_CLASSES
from swaplab.faces.templates import CANONICAL, Template, get_template, warp_image
from swaplab.io.files import IMAGE_SUFFIXES
from swaplab.io.video import VIDEO_SUFFIXES
from swaplab.preprocessing.inputs import Decode, Item, list_inputs, loader, plan_items, unit_identity
from swaplab.preprocessing.options import PreprocessOptions
from swaplab.runtime import get_logger

log = get_logger(__name__)

NO_FACE = "no face detected"
LOW_SCORE, SMALL_FACE = "face below min_score", "face below min_face_size"
@dataclass
class _Unit:
    source: str
    identity: str | None
    reason: str | None = None
    received: bool = False  # its last item has arrived
    pending: int = 0  # its frames waiting for detection
    frames: int = 0
    frames_without_face: int = 0
    rejected: Counter = field(default_factory=Counter)  # why detected faces were dropped
    faces: list[dict[str, Any]] = field(default_factory=list)  # crop, manifest row, labels, frame

    def status(self) -> str:
        if self.reason:
            return self.reason
        if self.faces:
            return "ok"
        return self.rejected.most_common(1)[0][0] if self.rejected else NO_FACE


class FaceExtractor:
    """Detection batches -> aligned crops, manifest fields and (optionally) parsing labels per image."""

    def __init__(self, detector: Any, template: Template, opts: PreprocessOptions, landmarks: Any = None,
                 parser: Any = None) -> None:
        if opts.landmarks == "dlib68" and landmarks is None:
            raise ValueError("landmarks=dlib68 needs the landmarks expert (experts.landmarks)")
        if opts.parsing and parser is None:
            raise ValueError("parsing=true needs the parsing expert (experts.parsing)")
        self.detector, self.template, self.opts = detector, template, opts
        self.landmarks = landmarks if opts.landmarks == "dlib68" else None
        self.parser = parser if opts.parsing else None
        self.canonical = get_template(CANONICAL)

    def select(self, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, str | None]:
        """Indices of the faces kept, or none and why."""
        if len(boxes) == 0:
            return np.zeros(0, int), NO_FACE
        ok_score = scores >= self.opts.min_score
        ok_size = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= self.opts.min_face_size
        keep = np.flatnonzero(ok_score & ok_size)
        if len(keep) == 0:
            return keep, LOW_SCORE if not ok_score.any() else SMALL_FACE
        if self.opts.faces == "largest":
            area = np.prod(boxes[keep, 2:] - boxes[keep, :2], axis=1)
            keep = keep[[int(np.argmax(area))]]
        return keep, None

    def __call__(self, images: list[np.ndarray]) -> list[tuple[list[dict[str, Any]], str | None]]:
        """Per image: (faces as dicts with crop, labels and manifest fields, reason when there is none)."""
        detections = self.detector(images) if images else []
        out, canonical = [], []
        for image, det in zip(images, detections, strict=True):
            keep, reason = self.select(np.asarray(det.boxes), np.asarray(det.scores))
            if len(keep) == 0:
                out.append(([], reason))
                continue
            # rounded as the manifest keeps them, so stored matrices are exactly the fits of stored landmarks
            boxes, points = np.asarray(det.boxes)[keep], np.asarray(det.landmarks, np.float64)[keep].round(3)
            marks68 = None
            if self.landmarks is not None:
                marks68 = np.asarray(self.landmarks(image, boxes), np.float64).round(3)
                points = five_points(marks68).round(3)
            matrices = self.template.matrix(points if marks68 is None else marks68)
            faces = []
            for k, m in enumerate(matrices):
                row = {"face": k, "box": [round(float(v), 2) for v in boxes[k]],
                       "landmarks": points[k].tolist(), "score": round(float(det.scores[keep[k]]), 5),
                       "template": self.template.name, "matrix": m.tolist()}
                if marks68 is not None:
                    row["landmarks68"] = marks68[k].tolist()
                faces.append({"crop": warp_image(image, m, self.template.size), "row": row, "labels": None})
                if self.parser is not None:
                    c = self.canonical.matrix(points[k])
                    canonical.append((faces[-1], c, warp_image(image, c, self.canonical.size)))
            out.append((faces, None))
        if canonical:
            self._parse(canonical)
        return out

    def _parse(self, work: list[tuple[dict[str, Any], np.ndarray, np.ndarray]]) -> None:
        crops = torch.from_numpy(np.stack([w[2] for w in work])).to(self.parser.device)
        with torch.inference_mode():
            labels = self.parser.labels(crops.permute(0, 3, 1, 2).float() / 127.5 - 1).to("cpu", torch.uint8)
        size = self.template.size
        for (face, canonical_m, _), label in zip(work, labels.numpy(), strict=True):
            stored_m = np.array(face["row"]["matrix"])
            # stored crop <- image <- canonical crop
            composite = (np.vstack([stored_m, [0, 0, 1]]) @ np.linalg.inv(np.vstack([canonical_m, [0, 0, 1]])))[:2]
            face["labels"] = cv2.warpAffine(label, composite, (size, size), flags=cv2.INTER_NEAREST,
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def store_meta(template: Template, opts: PreprocessOptions) -> dict[str, Any]:
    return {"format": st.FORMAT, "version": st.VERSION, "template": template.name, "size": template.size,
            "image_codec": opts.codec, "jpeg_quality": int(opts.jpeg_quality), "labels": bool(opts.parsing),
            "label_classes": list(CELEBAMASK_CLASSES) if opts.parsing else []}


def check_compatible(out: Path, existing: dict[str, Any], wanted: dict[str, Any]) -> None:
    keys = ["format", "template", "size", "image_codec", "labels"] + (["jpeg_quality"] if
                                                                      wanted["image_codec"] == "jpeg" else [])
    diff = {k: (existing.get(k), wanted[k]) for k in keys if existing.get(k) != wanted[k]}
    if diff:
        text = ", ".join(f"{k}={a!r} there, {b!r} asked" for k, (a, b) in diff.items())
        raise ValueError(f"output {out} holds a store made with other settings ({text}): use another output "
                         f"folder or the same settings")


def done_units(out: Path) -> dict[str, dict[str, Any]]:
    """Every unit listed in a complete shard's done.json."""
    return {u["source"]: u for n in st.complete_shards(out) for u in st.read_done(out, n)["units"]}


def totals(out: Path) -> dict[str, Any]:
    """Cumulative counts over every complete shard."""
    units = done_units(out)
    status = Counter(u["status"] for u in units.values())
    return {"units": len(units), "ok": status.pop("ok", 0), "faces": sum(u.get("faces", 0) for u in units.values()),
            "frames_without_face": sum(u.get("frames_without_face", 0) for u in units.values()),
            "skipped": dict(sorted(status.items())), "shards": len(st.complete_shards(out))}


class _Shards:
    """Opens shards as needed, keeps each unit inside one shard and closes a shard when it is full."""

    def __init__(self, out: Path, meta: dict[str, Any], shard_size: int) -> None:
        self.out, self.meta, self.shard_size = out, meta, shard_size
        done = st.complete_shards(out)
        self.next_number = done[-1] + 1 if done else 0
        self.writer: st.ShardWriter | None = None

    def add(self, unit: _Unit) -> None:
        faces = unit.faces if unit.status() == "ok" else []
        if self.writer is not None and len(self.writer) and len(self.writer) + len(faces) > self.shard_size:
            self.close()
        if self.writer is None:
            self.writer = st.ShardWriter(self.out, self.next_number, self.meta)
            self.next_number += 1
        for face in faces:
            row = {"source": unit.source, "frame": face["frame"], "identity": unit.identity, **face["row"]}
            self.writer.add(face["crop"], row, face["labels"])
        self.writer.record({"source": unit.source, "status": unit.status(), "faces": len(faces),
                            "frames": unit.frames, "frames_without_face": unit.frames_without_face})
        if len(self.writer) >= self.shard_size:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _progress(total: int, enabled: bool) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="file", desc="preprocess", disable=None if enabled else True)


def preprocess_faces(input_path: str | Path, output: str | Path, detector: Any,
                     opts: PreprocessOptions | None = None, landmarks: Any = None, parser: Any = None,
                     progress: bool = True) -> dict[str, Any]:
    """Preprocess `input_path` (an image, a video or a folder of them) into the store at `output`.
    Returns {"output", "run": this run's counts, "total": the store's cumulative counts}."""
    opts = opts or PreprocessOptions()
    problems = opts.problems()
    if problems:
        raise ValueError("invalid preprocessing options: " + "; ".join(problems))
    start = time.perf_counter()
    root, units = list_inputs(input_path)
    if not units:
        raise FileNotFoundError(f"no images ({sorted(IMAGE_SUFFIXES)}) or videos ({sorted(VIDEO_SUFFIXES)}) "
                                f"under {root}")
    out = Path(output)
    template = get_template(opts.template, opts.size)
    meta = store_meta(template, opts)
    if (out / "dataset.json").is_file():
        check_compatible(out, json.loads((out / "dataset.json").read_text()), meta)
    done = done_units(out) if (out / "dataset.json").is_file() else {}
    todo = [u for u in units if u not in done]
    run: dict[str, Any] = {"inputs": len(units), "already_done": len(units) - len(todo), "units": len(todo),
                           "ok": 0, "faces": 0, "frames_without_face": 0, "skipped": {}}
    if not todo:
        log.info("nothing to do: all %d inputs under %s are already in %s", len(units), root, out)
        return {"output": str(out), "run": run, "total": totals(out)}

    out.mkdir(parents=True, exist_ok=True)
    if not (out / "dataset.json").is_file():
        st.write_json(out / "dataset.json", meta)
    for stale in st.incomplete_shard_files(out):
        log.info("removing %s (a shard an interrupted run left without done.json; its inputs are redone)", stale)
        stale.unlink()
    log.info("preprocessing %d of %d inputs under %s into %s (%s at %d px, %s)", len(todo), len(units), root, out,
             template.name, template.size, opts.codec)

    extract = FaceExtractor(detector, template, opts, landmarks, parser)
    state = [_Unit(u, unit_identity(u, opts.identity)) for u in todo]
    shards = _Shards(out, meta, opts.shard_size)
    skipped: Counter = Counter()
    buffer: list[tuple[int, int, np.ndarray]] = []
    finished = 0
    bar = _progress(len(todo), progress)
    show_bar = bar is not None and not bar.disable

    def flush() -> None:
        results = extract([image for _, _, image in buffer])
        for (u, frame, _), (faces, reason) in zip(buffer, results, strict=True):
            unit = state[u]
            unit.pending -= 1
            for face in faces:
                face["frame"] = frame
            unit.faces.extend(faces)
            if not faces:
                unit.frames_without_face += 1
                unit.rejected[reason] += 1
        buffer.clear()

    def finalize() -> None:
        nonlocal finished
        while finished < len(state) and state[finished].received and state[finished].pending == 0:
            unit = state[finished]
            shards.add(unit)
            status = unit.status()
            if status == "ok":
                run["ok"] += 1
                run["faces"] += len(unit.faces)
            else:
                skipped[status] += 1
            run["frames_without_face"] += unit.frames_without_face
            unit.faces = []
            finished += 1
            if show_bar:
                bar.update(1)
                bar.set_postfix(faces=run["faces"], skipped=sum(skipped.values()), refresh=False)
            elif finished % opts.log_every == 0 or finished == len(state):
                log.info("%d / %d inputs, %d faces, %d skipped", finished, len(state), run["faces"],
                         sum(skipped.values()))

    try:
        for sample in loader(Decode(root, todo, plan_items(root, todo, opts)), opts.num_workers):
            item: Item = sample["item"]
            unit = state[item.unit]
            if sample["error"] and not unit.reason:
                unit.reason = sample["error"]
                log.warning("skipping %s: %s", unit.source, sample["detail"] or sample["error"])
            if not unit.reason:
                for frame, image in zip(sample["frames"], sample["images"], strict=True):
                    buffer.append((item.unit, frame, image.numpy()))
                    unit.pending += 1
                    unit.frames += 1
            unit.received = item.last
            if len(buffer) >= opts.batch_size:
                flush()
            finalize()
        flush()
        finalize()
        shards.close()
    finally:
        if bar is not None:
            bar.close()
    run["skipped"] = dict(sorted(skipped.items()))
    run["seconds"] = round(time.perf_counter() - start, 2)
    summary = {"output": str(out), "template": template.name, "size": template.size, "run": run,
               "total": totals(out), "options": asdict(opts)}
    st.write_json(out / "summary.json", summary)
    log.info("preprocessed %d inputs in %.1f s: %d with faces (%d faces), skipped %s; the store now holds %d "
             "faces from %d inputs", len(todo), run["seconds"], run["ok"], run["faces"], run["skipped"] or "none",
             summary["total"]["faces"], summary["total"]["units"])
    return summary
