"""Loader throughput of the real-face formats at 256x256: an identity-folder tree of JPEG crops (FaceFolderPairs)
and the same crops as preprocessed stores (jpeg and raw codecs, PreprocessedFacePairs), per DataLoader worker
count, through SwapDataModule. Prints one JSON object.

    .venv/bin/python experiments/benchmarks/data_loading.py --images 1024 --workers 0 1 2 --batch-size 32

Each pair is two crops: images/s = 2 x pairs/s. Throughput is measured after the first batch (worker start-up
and the first decodes are reported apart as first_batch_s). The faces are procedural (SyntheticFaces).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from swaplab.data import SwapDataModule
from swaplab.data.folders import FaceFolderPairs
from swaplab.data.store import PreprocessedFacePairs, ShardWriter, write_json
from swaplab.data.synthetic_faces import SyntheticFaces

SIZE = 256


def render_faces(n: int, identities: int) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 RGB 256x256 procedural faces (rendered in chunks) and their identity numbers."""
    renderer = SyntheticFaces(resolution=SIZE, supersample=1)
    ids = np.arange(n) % identities
    faces = []
    for start in range(0, n, 64):
        chunk = torch.as_tensor(ids[start:start + 64])
        image = renderer(chunk, torch.arange(start, start + len(chunk)))["image"]
        faces.append(((image.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy())
    return np.concatenate(faces), ids


def write_folders(root: Path, faces: np.ndarray, ids: np.ndarray, quality: int) -> None:
    for k, (face, i) in enumerate(zip(faces, ids, strict=True)):
        path = root / f"id{i:05d}" / f"{k:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(face, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])


def write_store(root: Path, faces: np.ndarray, ids: np.ndarray, codec: str, quality: int) -> None:
    meta = {"format": "swaplab-faces", "version": 1, "template": "faceshifter_256", "size": SIZE,
            "image_codec": codec, "jpeg_quality": quality, "labels": False, "label_classes": []}
    root.mkdir(parents=True)
    write_json(root / "dataset.json", meta)
    writer = ShardWriter(root, 0, meta)
    for k, (face, i) in enumerate(zip(faces, ids, strict=True)):
        writer.add(face, {"source": f"id{i:05d}/{k:06d}.jpg", "frame": -1, "identity": f"id{i:05d}",
                          "box": [0, 0, SIZE, SIZE], "landmarks": [[0, 0]] * 5, "score": 1.0,
                          "template": "faceshifter_256", "matrix": [[1, 0, 0], [0, 1, 0]]})
    writer.close()


def measure(dataset, workers: int, batch_size: int, max_batches: int | None) -> dict[str, float]:
    module = SwapDataModule(train=dataset, batch_size=batch_size, num_workers=workers, persistent_workers=False)
    start = time.perf_counter()
    batches = 0
    first = steady_start = None
    for batch in module.train_dataloader():
        assert batch["source"].shape[-1] == SIZE
        batches += 1
        if first is None:
            first = steady_start = time.perf_counter()
        if max_batches and batches >= max_batches + 1:
            break
    end = time.perf_counter()
    pairs = (batches - 1) * batch_size
    pairs_per_s = pairs / (end - steady_start) if pairs else float("nan")
    return {"first_batch_s": round(first - start, 3), "timed_batches": batches - 1,
            "pairs_per_s": round(pairs_per_s, 1), "images_per_s": round(2 * pairs_per_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024, help="face crops to write")
    parser.add_argument("--identities", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batches", type=int, default=None, help="timed batches per run (default: an epoch)")
    parser.add_argument("--jpeg-quality", type=int, default=95)
    args = parser.parse_args()

    faces, ids = render_faces(args.images, args.identities)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_folders(tmp / "folders", faces, ids, args.jpeg_quality)
        for codec in ("jpeg", "raw"):
            write_store(tmp / f"store_{codec}", faces, ids, codec, args.jpeg_quality)
        common = {"resolution": SIZE, "template": "faceshifter_256", "seed": 0}
        datasets = {
            "folders_jpeg": FaceFolderPairs(tmp / "folders", stored_template="faceshifter_256", **common),
            # the same files read as FFHQ-template crops: adds the batched warp to another template
            "folders_jpeg_template_warp": FaceFolderPairs(tmp / "folders", stored_template="ffhq_256", **common),
            "store_jpeg": PreprocessedFacePairs(tmp / "store_jpeg", masks=False, **common),
            "store_raw": PreprocessedFacePairs(tmp / "store_raw", masks=False, **common),
        }
        sizes = {name: sum(f.stat().st_size for f in (tmp / name).rglob("*") if f.is_file())
                 for name in ("folders", "store_jpeg", "store_raw")}
        for name, dataset in datasets.items():
            for workers in args.workers:
                results.append({"format": name, "workers": workers,
                                **measure(dataset, workers, args.batch_size, args.max_batches)})
    print(json.dumps({
        "machine": {"cpu_count": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
                    "torch_threads": torch.get_num_threads(), "opencv_threads": cv2.getNumThreads(),
                    "torch": torch.__version__, "opencv": cv2.__version__, "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "setup": {"images": args.images, "identities": args.identities, "resolution": SIZE,
                  "batch_size": args.batch_size, "jpeg_quality": args.jpeg_quality,
                  "bytes_on_disk": sizes, "note": "images_per_s = 2 * pairs_per_s (source + target)"},
        "results": results,
    }, indent=1))


if __name__ == "__main__":
    main()
