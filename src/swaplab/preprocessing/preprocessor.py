"""Preprocessing: images and videos -> detected, aligned (and optionally parsed) face crops in a `FaceStore`.

Units of work are the input files (sorted paths relative to the input root). Worker processes decode them
(a video in chunks of its selected frames); the main process detects faces in batches, picks faces, fits the
template, crops (`extraction.FaceExtractor`) and writes shards (`shards.ShardSink`). A unit never spans
shards and is done once a shard's done.json lists it: a re-run skips done units (and writes nothing when
nothing is left), and units of a shard that never got its done.json (an interrupted run) are redone into a
new shard.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from swaplab.data import store as st
from swaplab.faces.templates import get_template
from swaplab.io.files import IMAGE_SUFFIXES
from swaplab.io.video import VIDEO_SUFFIXES
from swaplab.preprocessing.extraction import FaceExtractor, Unit
from swaplab.preprocessing.inputs import Decode, Item, list_inputs, loader, plan_items, unit_identity
from swaplab.preprocessing.options import PreprocessOptions
from swaplab.preprocessing.shards import ShardSink, check_compatible, done_units, store_meta, totals
from swaplab.runtime import get_logger

log = get_logger(__name__)


@dataclass
class RunState:
    """One run's moving parts: its units (in input order), decoded frames waiting for detection, the open
    shard, this run's counts and the progress bar."""

    out: Path
    units: list[Unit]
    shards: ShardSink
    counts: dict[str, Any]  # the summary's "run"
    skipped: Counter = field(default_factory=Counter)  # units without faces, by reason
    queue: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # (unit index, frame, image)
    finished: int = 0  # units written, a prefix of `units`
    bar: Any = None  # tqdm, or None without tqdm

    @property
    def show_bar(self) -> bool:
        return self.bar is not None and not self.bar.disable


class Preprocessor:
    """Detector (+ optional dlib 68-point landmarks and face parser) and `PreprocessOptions` -> a face store.

    `Preprocessor(detector, opts, landmarks=..., parser=...).run(input_path, output)` preprocesses an image, a
    video or a folder of them into the store at `output` (new, or one made with the same settings: done units
    are skipped) and returns the summary. `run` goes through the steps below in order."""

    def __init__(self, detector: Any, opts: PreprocessOptions | None = None, landmarks: Any = None,
                 parser: Any = None, progress: bool = True) -> None:
        self.opts = opts or PreprocessOptions()
        problems = self.opts.problems()
        if problems:
            raise ValueError("invalid preprocessing options: " + "; ".join(problems))
        self.detector, self.landmarks, self.parser, self.progress = detector, landmarks, parser, progress
        self.template = get_template(self.opts.template, self.opts.size)
        self.meta = store_meta(self.template, self.opts)

    def run(self, input_path: str | Path, output: str | Path) -> dict[str, Any]:
        """Returns {"output", "run": this run's counts, "total": the store's cumulative counts} (and, when there
        was work, template, size, options; then also written to summary.json)."""
        start = time.perf_counter()
        root, units = self.list_units(input_path)
        out = Path(output)
        todo = self.units_to_do(out, units)
        counts: dict[str, Any] = {"inputs": len(units), "already_done": len(units) - len(todo),
                                  "units": len(todo), "ok": 0, "faces": 0, "frames_without_face": 0,
                                  "skipped": {}}
        if not todo:
            log.info("nothing to do: all %d inputs under %s are already in %s", len(units), root, out)
            return {"output": str(out), "run": counts, "total": totals(out)}

        self.prepare_output(out)
        log.info("preprocessing %d of %d inputs under %s into %s (%s at %d px, %s)", len(todo), len(units), root,
                 out, self.template.name, self.template.size, self.opts.codec)
        extractor = FaceExtractor(self.detector, self.template, self.opts, self.landmarks, self.parser)
        run = RunState(out, [Unit(u, unit_identity(u, self.opts.identity)) for u in todo],
                       ShardSink(out, self.meta, self.opts.shard_size), counts)
        run.bar = self.progress_bar(len(todo))
        try:
            for sample in loader(Decode(root, todo, self.plan(root, todo)), self.opts.num_workers):
                self.receive(run, sample)
                if len(run.queue) >= self.opts.batch_size:
                    self.extract_queued(run, extractor)
                self.write_ready_units(run)
            self.extract_queued(run, extractor)
            self.write_ready_units(run)
            run.shards.close()
        finally:
            if run.bar is not None:
                run.bar.close()
        return self.summarize(run, time.perf_counter() - start)

    # ----- the steps of `run`

    @staticmethod
    def list_units(input_path: str | Path) -> tuple[Path, list[str]]:
        """(input root, its images and videos as sorted relative paths); none is an error."""
        root, units = list_inputs(input_path)
        if not units:
            raise FileNotFoundError(f"no images ({sorted(IMAGE_SUFFIXES)}) or videos ({sorted(VIDEO_SUFFIXES)}) "
                                    f"under {root}")
        return root, units

    def units_to_do(self, out: Path, units: list[str]) -> list[str]:
        """Resume: the units no complete shard of an existing store at `out` lists (that store must have been
        made with the same settings)."""
        if not (out / "dataset.json").is_file():
            return list(units)
        check_compatible(out, json.loads((out / "dataset.json").read_text()), self.meta)
        done = done_units(out)
        return [u for u in units if u not in done]

    def prepare_output(self, out: Path) -> None:
        """Create the store (dataset.json) if new; remove what an interrupted run left of an unfinished shard."""
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "dataset.json").is_file():
            st.write_json(out / "dataset.json", self.meta)
        for stale in st.incomplete_shard_files(out):
            log.info("removing %s (a shard an interrupted run left without done.json; its inputs are redone)",
                     stale)
            stale.unlink()

    def plan(self, root: Path, todo: list[str]) -> list[Item]:
        """Work items: one per image, one per chunk of a video's selected frames (or one carrying its error)."""
        return plan_items(root, todo, self.opts)

    @staticmethod
    def receive(run: RunState, sample: dict[str, Any]) -> None:
        """A decoded work item: its frames join the detection queue, or its unit gets its skip reason."""
        item: Item = sample["item"]
        unit = run.units[item.unit]
        if sample["error"] and not unit.reason:
            unit.reason = sample["error"]
            log.warning("skipping %s: %s", unit.source, sample["detail"] or sample["error"])
        if not unit.reason:
            for frame, image in zip(sample["frames"], sample["images"], strict=True):
                run.queue.append((item.unit, frame, image.numpy()))
                unit.pending += 1
                unit.frames += 1
        unit.received = item.last

    @staticmethod
    def extract_queued(run: RunState, extractor: FaceExtractor) -> None:
        """Detect (one batch), align, crop (and parse) the queued frames; their faces join their units."""
        results = extractor([image for _, _, image in run.queue])
        for (u, frame, _), (faces, reason) in zip(run.queue, results, strict=True):
            unit = run.units[u]
            unit.pending -= 1
            for face in faces:
                face["frame"] = frame
            unit.faces.extend(faces)
            if not faces:
                unit.frames_without_face += 1
                unit.rejected[reason] += 1
        run.queue.clear()

    def write_ready_units(self, run: RunState) -> None:
        """Write the units that are complete into shards, in input order (a unit waits for those before it)."""
        while run.finished < len(run.units) and run.units[run.finished].ready:
            unit = run.units[run.finished]
            run.shards.add(unit)
            self.count(run, unit)
            unit.faces = []  # written: free the crops
            run.finished += 1
            self.report_progress(run)

    @staticmethod
    def count(run: RunState, unit: Unit) -> None:
        status = unit.status()
        if status == "ok":
            run.counts["ok"] += 1
            run.counts["faces"] += len(unit.faces)
        else:
            run.skipped[status] += 1
        run.counts["frames_without_face"] += unit.frames_without_face

    def progress_bar(self, total: int) -> Any:
        try:
            from tqdm.auto import tqdm  # optional: a progress bar only where tqdm is installed
        except ImportError:
            return None
        return tqdm(total=total, unit="file", desc="preprocess", disable=None if self.progress else True)

    def report_progress(self, run: RunState) -> None:
        """The bar when one is shown, else a log line every `log_every` units and at the end."""
        skipped = sum(run.skipped.values())
        if run.show_bar:
            run.bar.update(1)
            run.bar.set_postfix(faces=run.counts["faces"], skipped=skipped, refresh=False)
        elif run.finished % self.opts.log_every == 0 or run.finished == len(run.units):
            log.info("%d / %d inputs, %d faces, %d skipped", run.finished, len(run.units), run.counts["faces"],
                     skipped)

    def summarize(self, run: RunState, seconds: float) -> dict[str, Any]:
        """This run's counts with skips by reason, the store's totals and the options; written to summary.json."""
        counts = run.counts
        counts["skipped"] = dict(sorted(run.skipped.items()))
        counts["seconds"] = round(seconds, 2)
        summary = {"output": str(run.out), "template": self.template.name, "size": self.template.size,
                   "run": counts, "total": totals(run.out), "options": asdict(self.opts)}
        st.write_json(run.out / "summary.json", summary)
        log.info("preprocessed %d inputs in %.1f s: %d with faces (%d faces), skipped %s; the store now holds %d "
                 "faces from %d inputs", len(run.units), counts["seconds"], counts["ok"], counts["faces"],
                 counts["skipped"] or "none", summary["total"]["faces"], summary["total"]["units"])
        return summary
