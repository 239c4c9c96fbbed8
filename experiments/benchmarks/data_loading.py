"""Loader throughput of the real-face formats at 128 and 256 px: an identity-folder tree of JPEG crops
(FaceFolderPairs, as stored and read as FFHQ-template crops that need a template warp) and the same crops as a
preprocessed JPEG store (PreprocessedFacePairs), per DataLoader worker count, through SwapDataModule. Writes one
JSON object (stdout, and --save PATH).

    .venv/bin/python experiments/benchmarks/data_loading.py --save experiments/benchmarks/results/data_loading_2cpu.json

What crosses the worker boundary is the compact batch (uint8 crops at the stored size, small per-sample vectors:
swaplab.data.prepare); the float conversion, template warp and augmentation run after transfer
(`prepare_batch`, on the training device). `prepare_cpu_pairs_per_s` is that step timed on this machine's CPU in
the main process, for a run with no GPU. Each pair is two crops: images/s = 2 x pairs/s. A run skips the first
batch and the batches the workers made while starting (1 + 2 x workers, the prefetch), then times `--timed`
batches. Rounds alternate the order of the worker counts; the summary takes the median of the rounds.

`pairs_per_cpu_s` divides the pairs by the CPU seconds the loading processes spent (the workers', or the main
process's without workers; /proc/<pid>/stat): a rate per busy core that other load on the machine changes far less
than the wall-clock pairs/s. `workers_per_gpu` estimates how many loader workers (one CPU core each, as fast as one
here) each method's paper config needs to feed one GPU at 30% MFU: pairs/s needed = 0.3 x peak / (training FLOPs
per pair, from train_step_paper_flops.json), divided by the 1-worker pairs per CPU-second at the method's
resolution.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from swaplab.data import SwapDataModule
from swaplab.data.folders import FaceFolderPairs
from swaplab.data.prepare import prepare_batch
from swaplab.data.store import PreprocessedFacePairs, ShardWriter, write_json
from swaplab.data.synthetic_faces import SyntheticFaces

RESULTS = Path(__file__).parent / "results"
PEAK_BF16_FLOPS = 989.4e12  # H100 / H200 SXM dense bf16 (data sheets), as train_step.py
MFU = 0.30
HEADROOM = 3  # the loader should outrun the GPU (augmentation in the workers, slower cores, larger stored crops)


def render_faces(n: int, identities: int, unique: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 RGB procedural faces and their identity numbers: `unique` renders (in chunks), repeated (a
    file's decode cost does not depend on whether another file holds the same face)."""
    renderer = SyntheticFaces(resolution=size, supersample=1)
    ids = np.arange(n) % identities
    faces = []
    for start in range(0, min(n, unique), 64):
        chunk = torch.as_tensor(ids[start:min(start + 64, unique)])
        image = renderer(chunk, torch.arange(start, start + len(chunk)))["image"]
        faces.append(((image.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy())
    faces = np.concatenate(faces)
    return faces[np.arange(n) % len(faces)], ids


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU seconds of the processes `pids` so far (/proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def write_folders(root: Path, faces: np.ndarray, ids: np.ndarray, quality: int) -> None:
    for k, (face, i) in enumerate(zip(faces, ids, strict=True)):
        path = root / f"id{i:05d}" / f"{k:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(face, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])


def write_store(root: Path, faces: np.ndarray, ids: np.ndarray, quality: int) -> None:
    size = faces.shape[1]
    meta = {"format": "swaplab-faces", "version": 1, "template": "faceshifter_256", "size": size,
            "image_codec": "jpeg", "jpeg_quality": quality, "labels": False, "label_classes": []}
    root.mkdir(parents=True)
    write_json(root / "dataset.json", meta)
    writer = ShardWriter(root, 0, meta)
    for k, (face, i) in enumerate(zip(faces, ids, strict=True)):
        writer.add(face, {"source": f"id{i:05d}/{k:06d}.jpg", "frame": -1, "identity": f"id{i:05d}",
                          "box": [0, 0, size, size], "landmarks": [[0, 0]] * 5, "score": 1.0,
                          "template": "faceshifter_256", "matrix": [[1, 0, 0], [0, 1, 0]]})
    writer.close()


def measure(dataset, workers: int, batch_size: int, timed: int) -> dict[str, float]:
    module = SwapDataModule(train=dataset, batch_size=batch_size, num_workers=workers, persistent_workers=False)
    warm = 1 + 2 * workers  # the first batch and what the workers prefetched while the first was made
    load = os.getloadavg()[0]
    start = time.perf_counter()
    batches, first, steady_start, bytes_moved = 0, None, None, 0
    iterator = iter(module.train_dataloader())
    pids = [os.getpid()] + [w.pid for w in getattr(iterator, "_workers", [])]
    for batch in iterator:
        batches += 1
        if first is None:
            first = time.perf_counter() - start
            bytes_moved = sum(v.numel() * v.element_size() for v in batch.values() if torch.is_tensor(v))
            assert batch["source"].dtype == torch.uint8, "loader batches must cross as uint8"
        if batches == warm:
            steady_start, cpu_start = time.perf_counter(), [cpu_seconds([p]) for p in pids]
        if batches >= warm + timed:
            break
    end, cpu_end = time.perf_counter(), [cpu_seconds([p]) for p in pids]
    del iterator
    if batches < warm + timed:
        raise ValueError(f"an epoch has {batches} batches, fewer than {warm + timed}: write more --images")
    pairs = timed * batch_size
    cpu = [b - a for a, b in zip(cpu_start, cpu_end, strict=True)]
    loading_cpu = sum(cpu[1:]) if workers else cpu[0]  # the workers' CPU, or the main process's without them
    return {"first_batch_s": round(first, 3), "timed_batches": timed, "pairs_per_s": round(pairs / (end - steady_start), 1),
            "pairs_per_cpu_s": round(pairs / loading_cpu, 1) if loading_cpu else None,
            "main_cpu_ms_per_batch": round(1e3 * cpu[0] / timed, 1), "batch_bytes": bytes_moved,
            "load_avg_1min_before": round(load, 2)}


def prepare_rate(dataset, batch_size: int, repeats: int = 3) -> float:
    """pairs/s of prepare_batch on this CPU (main process): the step a GPU run does on the device."""
    raw = dataset.__getitems__(list(range(batch_size)))
    prepare_batch(raw)
    start = time.perf_counter()
    for _ in range(repeats):
        prepare_batch(raw)
    return round(repeats * batch_size / (time.perf_counter() - start), 1)


def workers_per_gpu(summary: dict, flops_file: Path) -> list[dict]:
    """Per paper config: pairs/s one GPU needs at 30% MFU, and the workers that takes at the 1-worker rate per
    CPU-second of the worker measured here (a busy core's rate, whatever else ran on the machine)."""
    out = []
    for row in json.loads(flops_file.read_text()):
        per_pair = row["flops_per_step"] / row["batch_size"]
        needed = MFU * PEAK_BF16_FLOPS / per_pair
        entry = {"config": row["name"], "resolution": row["resolution"], "train_flops_per_pair": per_pair,
                 "pairs_per_s_needed": round(needed, 1)}
        for fmt in ("folders_jpeg", "store_jpeg"):
            rate = summary.get(f"{fmt}@{row['resolution']}", {}).get("1")
            entry[f"pairs_per_worker_{fmt}"] = rate
            entry[f"workers_{fmt}"] = math.ceil(needed / rate) if rate else None
            entry[f"workers_{fmt}_3x_headroom"] = math.ceil(HEADROOM * needed / rate) if rate else None
        out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1536, help="face crops to write")
    parser.add_argument("--unique", type=int, default=128, help="distinct faces rendered (repeated to --images)")
    parser.add_argument("--identities", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--timed", type=int, default=16, help="timed batches per run (after the warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; odd rounds reverse the worker order")
    parser.add_argument("--jpeg-quality", type=int, default=95)
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()

    faces256, ids = render_faces(args.images, args.identities, args.unique)
    results, prepare = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        datasets = {}
        for size in args.resolutions:
            faces = faces256 if size == 256 else np.stack(
                [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in faces256])
            write_folders(tmp / f"folders{size}", faces, ids, args.jpeg_quality)
            write_store(tmp / f"store{size}", faces, ids, args.jpeg_quality)
            common = {"resolution": size, "template": "faceshifter_256", "seed": 0, "augment": {"hflip": 0.5}}
            datasets[f"folders_jpeg@{size}"] = FaceFolderPairs(tmp / f"folders{size}",
                                                               stored_template="faceshifter_256", **common)
            # the same files read as FFHQ-template crops: the template warp (on the device after transfer)
            datasets[f"folders_jpeg_template_warp@{size}"] = FaceFolderPairs(
                tmp / f"folders{size}", stored_template="ffhq_256", **common)
            datasets[f"store_jpeg@{size}"] = PreprocessedFacePairs(tmp / f"store{size}", masks=False, **common)
        for name, dataset in datasets.items():
            prepare[name] = prepare_rate(dataset, args.batch_size)
        for r in range(args.rounds):
            for name, dataset in datasets.items():
                order = args.workers if r % 2 == 0 else args.workers[::-1]
                for workers in order:
                    fmt, size = name.split("@")
                    row = {"format": fmt, "resolution": int(size), "workers": workers, "round": r,
                           **measure(dataset, workers, args.batch_size, args.timed)}
                    results.append(row)
                    print(json.dumps(row), flush=True)
    summary: dict[str, dict[str, float]] = {}
    per_cpu: dict[str, dict[str, float]] = {}
    for name in datasets:
        fmt, size = name.split("@")
        runs = {w: [r for r in results if r["format"] == fmt and r["resolution"] == int(size) and r["workers"] == w]
                for w in args.workers}
        summary[name] = {str(w): statistics.median(r["pairs_per_s"] for r in rs) for w, rs in runs.items()}
        per_cpu[name] = {str(w): statistics.median(r["pairs_per_cpu_s"] for r in rs if r["pairs_per_cpu_s"])
                         for w, rs in runs.items()}
    checks = {name: {"two_workers_over_main": round(s["2"] / s["0"], 2)} for name, s in summary.items()
              if "0" in s and "2" in s}
    report = {
        "machine": {"cpu_count": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "opencv": cv2.__version__,
                    "python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "setup": {"images": args.images, "identities": args.identities, "batch_size": args.batch_size,
                  "jpeg_quality": args.jpeg_quality, "timed_batches": args.timed, "rounds": args.rounds,
                  "augment": {"hflip": 0.5},
                  "crossing_the_worker_boundary": "uint8 B x 3 x S x S crops at the stored size and template, "
                  "int64 pair keys / identities, bool flags, _geometry (B x 2 int32), _matrix (B x 2 x 3 float32), "
                  "_augment (B x 2 x 4 float32); float conversion, template warp and flips run after transfer "
                  "(swaplab.data.prepare.prepare_batch, on the training device)",
                  "note": "images_per_s = 2 * pairs_per_s. Other helpers ran on this 2-core machine at the same "
                  "time (see load_avg_1min_before per run): wall-clock figures are noisy, and on an oversubscribed "
                  "machine more processes get a larger share of the cores, which favours runs with more workers; "
                  "pairs_per_cpu_s (CPU time of the loading processes) is the per-core rate that load changes "
                  "least. Rounds alternate the worker order; summaries are medians of the rounds. OpenCV runs 1 "
                  "thread once a run with workers has started (fork safety), so later main-process runs decode "
                  "single-threaded, as in training with workers."},
        "summary_pairs_per_s": summary,
        "summary_pairs_per_cpu_s": per_cpu,
        "checks": checks,
        "prepare_cpu_pairs_per_s": prepare,
        "workers_per_gpu": {
            "assumptions": f"pairs/s needed = {MFU} x {PEAK_BF16_FLOPS:.4g} FLOP/s (H100/H200 bf16 dense peak) / "
            "training FLOPs per pair (train_step_paper_flops.json, batch 1: forward + backward of every net the "
            "step runs, experts included); one worker = one CPU core as fast as one core here (the 1-worker "
            "pairs per CPU-second of the worker process, which the other helpers' load does not change much); crops stored at the training resolution (crops stored larger decode slower, except JPEGs "
            "decoded at 1/2, 1/4, 1/8 scale); prepare_batch on the GPU (not counted); two decodes per pair (a "
            "same-image pair decodes once); no per-image work beyond decoding (Fast Face-swap's paper data adds "
            "dlib's 68 landmarks per crop in the workers: not counted); *_3x_headroom: 3 x the rate needed",
            "configs": workers_per_gpu(per_cpu, RESULTS / "train_step_paper_flops.json"),
        },
        "results": results,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.save:
        args.save.write_text(text + "\n")


if __name__ == "__main__":
    main()
