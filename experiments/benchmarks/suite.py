"""Every method's paper-config training step on this machine, fp32 eager against the fast paths, each run of
train_step.py in its own process (so peak memory is per config). Prints one JSON object ("runs": train_step.py's
outputs with wall_seconds, "speedup": setting / fp32 images/s per config, "fastest": the best setting per config,
"mfu", and on a GPU "evaluation": evaluation.py on 10K swaps) and with --save writes it to
results/train_step_paper_<device>.json (or --output).

    .venv/bin/python experiments/benchmarks/suite.py --save      # a GPU: fp32 vs bf16+channels_last+compile, MFU,
                                                                 # FaceShifter at batch 16, eval of 10K swaps
    .venv/bin/python experiments/benchmarks/suite.py --cpu --resolution 64 --save --output train_step_fast_paths_2cpu.json
    .venv/bin/python experiments/benchmarks/suite.py --tiny --configs faceshifter --settings fp32  # CPU check

Batch sizes are per GPU (the paper experiments' global batches over 4 GPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# procedural content faces aligned to Fast Face-swap's frontal reference by their own landmarks (the paper
# experiment aligns CelebA-HQ crops with dlib)
ALIGN_BY_GROUND_TRUTH = ("data.wrap={_target_:swaplab.data.style_sets.FrontalAlignedPairs,_partial_:true,"
                         "landmarks:ground_truth}")
# config name: (train_step.py --model, overrides, per-GPU batch)
PAPER = {
    "faceshifter": ("faceshifter", ["experiment=faceshifter_paper"], 16),
    "faceshifter_hear": ("faceshifter_hear", ["experiment=faceshifter_hear", "hard_samples=null"], 16),  # all faces
    "hififace": ("hififace", ["experiment=hififace_256"], 8),
    **{f"fsgan_{stage}": ("fsgan", [f"experiment=fsgan_{stage}"], 8)
       for stage in ("segmentation", "reenactment", "inpainting", "blending")},
    "fast_faceswap": ("fast_faceswap", ["experiment=fast_faceswap_paper", "data=synthetic", ALIGN_BY_GROUND_TRUTH,
                                        "model.style_set.source=synthetic", "model.style_set.num_images=60"], 16),
}
SETTINGS = {
    "fp32": (["--precision", "32-true"], []),
    "bf16": (["--precision", "bf16-mixed"], []),
    "channels_last": (["--precision", "32-true"], ["model.channels_last=true"]),
    "bf16_channels_last": (["--precision", "bf16-mixed"], ["model.channels_last=true"]),
    "compile": (["--precision", "32-true"], ["model.compile=true"]),
    "bf16_compile": (["--precision", "bf16-mixed"], ["model.compile=true"]),
    "fast": (["--precision", "bf16-mixed"], ["model.channels_last=true", "model.compile=true"]),
}
GPU_SETTINGS = ["fp32", "fast"]  # the default: fp32 eager against every fast path at once
CPU_SETTINGS = ["fp32", "bf16", "channels_last", "bf16_channels_last", "compile"]  # --cpu


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="*", default=list(PAPER), choices=list(PAPER))
    parser.add_argument("--settings", nargs="*", default=None, choices=list(SETTINGS),
                        help=f"default {GPU_SETTINGS}; with --cpu {CPU_SETTINGS}")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="compile happens in the warm-up steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="every config's batch (default: PAPER's)")
    parser.add_argument("--resolution", nargs="*", default=[],
                        help="CONFIG=SIDE pairs (or one SIDE for all): smaller faces where a CPU is too slow")
    parser.add_argument("--cpu", action="store_true",
                        help="CPU table: every single fast path, batch 2, 3 steps after 2 warm-up, no FLOP count")
    parser.add_argument("--tiny", action="store_true", help="train_step.py --tiny sizes, 2 steps (tests)")
    parser.add_argument("--eval-swaps", type=int, default=None,
                        help="also time evaluation.py on this many swaps (paper FaceShifter, paper-size experts with "
                             "random weights, batches of 50); default 10000, 0 with --cpu / --tiny")
    parser.add_argument("--save", action="store_true", help="write results/train_step_paper_<device>.json")
    parser.add_argument("--output", default=None, help="with --save: this file name under results/")
    return parser.parse_args(argv)


def resolutions(pairs: list[str]) -> dict[str, int]:
    """{config: side} from CONFIG=SIDE pairs; a bare SIDE applies to every config."""
    out = {}
    for pair in pairs:
        config, _, side = pair.rpartition("=")
        for name in [config] if config else PAPER:
            out[name] = int(side)
    return out


def run_train_step(config: str, setting: str, args: argparse.Namespace) -> dict:
    model, overrides, batch = PAPER[config]
    flags, switches = SETTINGS[setting]
    side = resolutions(args.resolution).get(config)
    size = ["--tiny"] if args.tiny else ["--batch-size", str(args.batch_size or batch),
                                         *(["--resolution", str(side)] if side else [])]
    if args.tiny:  # tiny networks, and compile's tracing checked without C++ code generation
        overrides = [o for o in overrides if not o.startswith("experiment=")]
        switches = [*switches, "model.compile_backend=aot_eager"] if "model.compile=true" in switches else switches
    command = [sys.executable, str(HERE / "train_step.py"), "--model", model, *size, *flags, "--device", args.device,
               "--steps", str(args.steps), "--warmup", str(args.warmup), *(["--no-flops"] if args.cpu else []),
               "--override", *overrides, *switches]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = round(time.perf_counter() - start, 1)  # with building and compiling
    if done.returncode != 0:
        return {"config": config, "setting": setting, "wall_seconds": wall,
                "error": done.stderr.strip().splitlines()[-1:]}
    return {"config": config, "setting": setting, "wall_seconds": wall, **json.loads(done.stdout)}


def run_evaluation(args: argparse.Namespace) -> dict:
    batch = 50 if not args.tiny else 8
    size = ["--tiny"] if args.tiny else ["--experts", "pretrained", "--random-weights", "--resolution", "256",
                                         "--override", "experiment=faceshifter_paper"]
    command = [sys.executable, str(HERE / "evaluation.py"), "--model", "faceshifter", "--device", args.device,
               "--batch-size", str(batch), "--batches", str(max(args.eval_swaps // batch, 1)), *size]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    result = json.loads(done.stdout)
    return {**result, "seconds_per_10k_swaps": round(10_000 / result["swaps_per_second"], 1)}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.eval_swaps is None:
        args.eval_swaps = 0 if args.cpu or args.tiny else 10_000
    if args.tiny:
        args.steps, args.warmup = min(args.steps, 2), 1
    if args.cpu:
        args.batch_size, args.steps, args.warmup = args.batch_size or 2, min(args.steps, 3), min(args.warmup, 2)
    args.settings = args.settings or (CPU_SETTINGS if args.cpu else GPU_SETTINGS)
    runs = []
    for config in args.configs:
        for setting in args.settings:
            runs.append(run_train_step(config, setting, args))
            if args.save:  # after every run, so that a cut-off suite keeps what it measured
                save(summary(runs, args), args)
    result = summary(runs, args)
    if args.eval_swaps:
        result["evaluation"] = run_evaluation(args)
    print(json.dumps(result, indent=1))
    if args.save:
        save(result, args)
    return result


def summary(runs: list[dict], args: argparse.Namespace) -> dict:
    ok = {(r["config"], r["setting"]): r for r in runs if "error" not in r}
    speedup = {config: {setting: round(ok[config, setting]["images_per_second"]
                                       / ok[config, "fp32"]["images_per_second"], 3)
                        for setting in args.settings if setting != "fp32" and (config, setting) in ok}
               for config in args.configs if (config, "fp32") in ok}
    best = {config: max((s for s in args.settings if (config, s) in ok),
                        key=lambda s: ok[config, s]["images_per_second"], default=None) for config in args.configs}
    device = next((r["machine"]["device"] for r in ok.values()), "unknown") or "cpu"
    result = {"device": device, "load_average": [round(x, 2) for x in os.getloadavg()], "runs": runs,
              "speedup": {c: v for c, v in speedup.items() if v}, "fastest": best,
              "mfu": {f"{c}/{s}": r["mfu"] for (c, s), r in ok.items() if r.get("mfu") is not None}}
    return result


def save(result: dict, args: argparse.Namespace) -> None:
    device = result["device"]
    name = args.output or f"train_step_paper_{re.sub(r'[^A-Za-z0-9]+', '_', device).strip('_').lower()}.json"
    (HERE / "results" / name).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
