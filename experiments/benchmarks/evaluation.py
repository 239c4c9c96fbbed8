"""Evaluation throughput: swaps evaluated per second by the batched loop of eval.py (swap + self-swap, every
metric's experts on the device), on procedural faces. Prints one JSON object.

    .venv/bin/python experiments/benchmarks/evaluation.py --resolution 256 --batch-size 50 --batches 10 \
        --experts random --model faceshifter            # GPU when available
    .venv/bin/python experiments/benchmarks/evaluation.py --experts pretrained --random-weights \
        --override experiment=faceshifter_paper --batches 200     # 10K swaps, paper-size nets (suite.py runs this)
    .venv/bin/python experiments/benchmarks/evaluation.py --tiny   # seconds on a CPU (used by the tests)

The model is built from the train config (random weights: the throughput does not depend on them); the metrics
are the synthetic protocol's (conf/evaluation/synthetic.yaml) minus those whose expert is not configured.
Batches are rendered before timing, so the figure is the evaluation alone; the first batch is a warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CONF, TINY, machine, random_expert_weights, synchronize, train_config  # noqa: E402

from swaplab.data import SyntheticSwapDataset  # noqa: E402
from swaplab.metrics import build_metrics  # noqa: E402
from swaplab.metrics.runner import evaluate_swaps  # noqa: E402
from swaplab.models.loading import build_experts, build_model  # noqa: E402
from swaplab.runtime import resolve_device  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="faceshifter")
    parser.add_argument("--experts", default="random", help="experts config option (random | offline | pretrained)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--batches", type=int, default=10, help="timed batches (after one warm-up batch)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="32x32, tiny networks, 2 batches of 8 (tests)")
    parser.add_argument("--random-weights", action="store_true",
                        help="the configured experts' architectures with seeded random weights (no files needed): "
                             "paper-size experts with --experts pretrained")
    parser.add_argument("--override", nargs="*", default=[], help="extra train-config overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.tiny:
        args.resolution, args.batch_size, args.batches = 32, 8, 2
    device = resolve_device(args.device)
    cfg = train_config([f"model={args.model}", f"experts={args.experts}", f"data.resolution={args.resolution}",
                        *(TINY if args.tiny else []), *args.override])
    if args.random_weights:
        random_expert_weights(cfg)
    protocol = OmegaConf.load(CONF / "evaluation" / "synthetic.yaml")
    model, _ = build_model(cfg)
    specs = build_metrics(protocol.metrics)
    roles = [r for r in specs.roles() if r in cfg.experts]
    keep = {k: v for k, v in protocol.metrics.items() if all(r in roles for r in specs[k].roles().values())}
    experts = build_experts(cfg.experts, roles)
    metrics = build_metrics(keep, experts)
    model.to(device), experts.to(device), metrics.to(device)
    dataset = SyntheticSwapDataset(resolution=args.resolution, num_identities=1000, images_per_identity=4,
                                   identity_offset=2_000_000, same_identity_rate=0.0)
    batches = [dataset.__getitems__(list(range(i * args.batch_size, (i + 1) * args.batch_size)))
               for i in range(args.batches + 1)]
    if device.type == "cuda":
        batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
    evaluate_swaps(model, batches[:1], metrics, device)  # warm-up (kernels, allocator)
    metrics.reset()
    synchronize(device)
    start = time.perf_counter()
    evaluate_swaps(model, batches[1:], metrics, device)
    values = metrics.compute()
    synchronize(device)
    seconds = time.perf_counter() - start
    swaps = args.batches * args.batch_size
    result = {
        "machine": machine(device),
        "setup": {"model": args.model, "experts": args.experts, "random_weights": args.random_weights,
                  "overrides": args.override, "resolution": args.resolution,
                  "batch_size": args.batch_size, "batches": args.batches, "metrics": list(keep),
                  "expert_roles": roles, "reconstruction": metrics.needs_reconstruction},
        "swaps": swaps, "seconds": round(seconds, 4), "swaps_per_second": round(swaps / seconds, 2),
        "metrics": {k: round(v, 5) for k, v in values.items()},
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
