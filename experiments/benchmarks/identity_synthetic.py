"""Face verification of the synthetic identity networks (experts=synthetic: identity, identity_eval) on held-out
procedural people: accuracy (10-fold threshold, as LFW reports it) overall and per yaw bin. Prints JSON; --save
writes results/identity_synthetic.json (the README's figures).

    .venv/bin/python experiments/benchmarks/identity_synthetic.py --save
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import hydra
import torch

from swaplab.data.identities import SyntheticVerificationPairs
from swaplab.models.identity.verification import verification_report
from swaplab.tasks.compose import compose_run_config

HERE = Path(__file__).resolve().parent
CONF = HERE.parents[1] / "conf"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--identities", type=int, default=200)
    parser.add_argument("--identity-offset", type=int, default=3_000_000, help="people no network was validated on")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--save", action="store_true")
    return parser.parse_args(argv)


@torch.inference_mode()
def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    cfg = compose_run_config(CONF, "train", ["experts=synthetic"], output_dir=HERE / "results")
    pairs = SyntheticVerificationPairs(resolution=args.resolution, num_identities=args.identities,
                                       num_pairs=args.pairs, identity_offset=args.identity_offset)
    batches = [pairs.__getitems__(list(range(i, min(i + args.batch_size, args.pairs))))
               for i in range(0, args.pairs, args.batch_size)]
    same, yaw = torch.cat([b["same"] for b in batches]), torch.cat(
        [torch.maximum(b["pose1"][:, 0].abs(), b["pose2"][:, 0].abs()) for b in batches])
    result = {"pairs": args.pairs, "identities": args.identities, "identity_offset": args.identity_offset,
              "resolution": args.resolution, "networks": {}}
    for role in ("identity", "identity_eval"):
        encoder = hydra.utils.instantiate(cfg.experts[role]).eval()
        scores = torch.cat([(encoder(b["image1"]) * encoder(b["image2"])).sum(1) for b in batches])
        report = verification_report(scores, same, yaw)
        result["networks"][role] = {"name": encoder.name, "weights": Path(str(encoder.weights)).name,
                                    **{k: round(v, 4) for k, v in report.items()}}
    print(json.dumps(result, indent=1))
    if args.save:
        (HERE / "results" / "identity_synthetic.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
