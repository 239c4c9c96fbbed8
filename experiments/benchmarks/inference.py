"""Inference throughput: swaps per second of a method's generator on aligned crops at its resolution, and
end-to-end frames per second of `swap.py` on a video (decode, detect, align, swap, blend, paste back, encode).
Prints one JSON object.

    .venv/bin/python experiments/benchmarks/inference.py --model faceshifter --resolution 256 --batch-size 32 \
        --frames 64 --frame-size 512            # GPU when available
    .venv/bin/python experiments/benchmarks/inference.py --tiny  # seconds on a CPU (used by the tests)

Random weights (the speed does not depend on them); the video is procedural: the astronaut photo moving
across a frame of --frame-size, with an audio track, encoded with libx264. Timed after one warm-up batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from skimage.data import astronaut

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TINY, machine, synchronize, train_config  # noqa: E402

from swaplab.faces.templates import get_template  # noqa: E402
from swaplab.models.loading import build_experts, build_model  # noqa: E402
from swaplab.pipelines import FaceSwapPipeline, SwapOptions, swap_video  # noqa: E402
from swaplab.runtime import resolve_device  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="faceshifter")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=5, help="timed generator batches (after a warm-up)")
    parser.add_argument("--frames", type=int, default=64, help="video frames (0: no video benchmark)")
    parser.add_argument("--frame-size", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="32x32 tiny networks, 8 frames of 128 px (tests)")
    parser.add_argument("--override", nargs="*", default=[], help="extra train-config overrides")
    return parser.parse_args(argv)


def write_video(path: Path, frames: int, size: int, fps: int = 25) -> None:
    face = cv2.resize(astronaut()[20:276, 100:356], (size // 2, size // 2), interpolation=cv2.INTER_AREA)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            frame = np.full((size, size, 3), 40, np.uint8)
            x = (i * 3) % (size // 2)
            frame[size // 4 : size // 4 + size // 2, x : x + size // 2] = face
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, "rgb24")))
        container.mux(stream.encode(None))


@torch.inference_mode()
def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.tiny:
        args.resolution, args.batch_size, args.batches, args.frames, args.frame_size = 32, 8, 2, 8, 128
    device = resolve_device(args.device)
    cfg = train_config([f"model={args.model}", "experts=random", f"data.resolution={args.resolution}",
                        *(TINY if args.tiny else []), *args.override])
    model, _ = build_model(cfg)
    model.eval().to(device)
    crops = torch.rand(args.batch_size, 3, args.resolution, args.resolution, device=device) * 2 - 1
    model(crops, crops)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.batches):
        model(crops, crops)
    synchronize(device)
    seconds = time.perf_counter() - start
    result = {"machine": machine(device),
              "setup": {"model": args.model, "resolution": args.resolution, "batch_size": args.batch_size},
              "generator": {"swaps": args.batches * args.batch_size, "seconds": round(seconds, 4),
                            "swaps_per_second": round(args.batches * args.batch_size / seconds, 2)}}
    if args.frames:
        detector = build_experts(cfg.experts, ["detector"]).detector.to(device)
        pipe = FaceSwapPipeline(model, detector, get_template(cfg.data.template, args.resolution), SwapOptions())
        pipe.to(device)
        with tempfile.TemporaryDirectory() as tmp:
            write_video(Path(tmp) / "in.mp4", args.frames, args.frame_size)
            swap_video(pipe, None if not pipe.uses_source else astronaut(), Path(tmp) / "in.mp4",
                       Path(tmp) / "warm.mp4", batch_size=args.batch_size, progress=False)
            start = time.perf_counter()
            summary = swap_video(pipe, astronaut() if pipe.uses_source else None, Path(tmp) / "in.mp4",
                                 Path(tmp) / "out.mp4", batch_size=args.batch_size, progress=False)
            seconds = time.perf_counter() - start
        result["video"] = {"frames": summary.frames, "frame_size": args.frame_size,
                           "faces_swapped": summary.faces_swapped, "seconds": round(seconds, 3),
                           "frames_per_second": round(summary.frames / seconds, 2)}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
