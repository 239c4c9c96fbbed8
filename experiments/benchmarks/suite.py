"""Every method's paper-config training step on this machine, fp32 eager against the fast paths (bf16-mixed +
channels_last + torch.compile), each run of train_step.py in its own process. Prints one JSON object ("runs":
train_step.py's outputs, "speedup": fast / fp32 images/s per config) and with --save writes it to
results/train_step_paper_<device>.json.

    .venv/bin/python experiments/benchmarks/suite.py --save                     # a GPU: the issue's figures
    .venv/bin/python experiments/benchmarks/suite.py --tiny --configs faceshifter --settings fp32  # CPU check

Batch sizes are per GPU (the paper experiments' global batches over 4 GPUs).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
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
    "fast": (["--precision", "bf16-mixed"], ["model.channels_last=true", "model.compile=true"]),
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="*", default=list(PAPER), choices=list(PAPER))
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="compile happens in the warm-up steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="train_step.py --tiny sizes, 2 steps (tests)")
    parser.add_argument("--save", action="store_true", help="write results/train_step_paper_<device>.json")
    return parser.parse_args(argv)


def run_train_step(config: str, setting: str, args: argparse.Namespace) -> dict:
    model, overrides, batch = PAPER[config]
    flags, switches = SETTINGS[setting]
    size = ["--tiny"] if args.tiny else ["--batch-size", str(batch)]
    if args.tiny:  # tiny networks, and compile's tracing checked without C++ code generation
        overrides = [o for o in overrides if not o.startswith("experiment=")]
        switches = [*switches, "model.compile_backend=aot_eager"] if switches else switches
    command = [sys.executable, str(HERE / "train_step.py"), "--model", model, *size, *flags, "--device", args.device,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--override", *overrides, *switches]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"config": config, "setting": setting, "error": done.stderr.strip().splitlines()[-1:]}
    return {"config": config, "setting": setting, **json.loads(done.stdout)}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.tiny:
        args.steps, args.warmup = min(args.steps, 2), 1
    runs = [run_train_step(config, setting, args) for config in args.configs for setting in args.settings]
    ok = {(r["config"], r["setting"]): r for r in runs if "error" not in r}
    speedup = {config: round(ok[config, "fast"]["images_per_second"] / ok[config, "fp32"]["images_per_second"], 3)
               for config in args.configs if (config, "fp32") in ok and (config, "fast") in ok}
    device = next((r["machine"]["device"] for r in ok.values()), "unknown") or "cpu"
    result = {"device": device, "runs": runs, "speedup": speedup}
    print(json.dumps(result, indent=1))
    if args.save:
        name = re.sub(r"[^A-Za-z0-9]+", "_", device).strip("_").lower()
        (HERE / "results" / f"train_step_paper_{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
