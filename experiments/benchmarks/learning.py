"""Does each method learn to swap? Train on procedural faces with experts=synthetic for a fixed wall-clock budget
and score held-out pairs against their true swaps every N steps (evaluation=synthetic_truth's metrics: ID
retrieval over every held-out person with the independent identity_eval network, similarity, error against the
true swap in the face, 68-landmark error), beside the reference rows copy_target / copy_source / true_swap.
Prints JSON; --save writes results/learning_<methods>.json and a learning-curve plot beside it.

    .venv/bin/python experiments/benchmarks/learning.py --methods faceshifter hififace --minutes 30 --save
    .venv/bin/python experiments/benchmarks/learning.py --methods faceshifter faceshifter_hear   # HEAR on the AEI run

Methods: faceshifter, faceshifter_hear (trained on the faceshifter run of the same invocation, which must come
first), hififace. FSGAN (four chained stages) and Fast Face-swap (a style identity, no source) are not wired yet.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from swaplab.metrics import build_metrics, expert_lookup
from swaplab.metrics.references import build_references
from swaplab.metrics.runner import evaluate_swaps
from swaplab.models.loading import build_missing_experts, build_model
from swaplab.tasks.compose import compose_run_config

HERE = Path(__file__).resolve().parent
CONF = HERE.parents[1] / "conf"
SMALL = ["data.resolution=64", "data.num_workers=0", "data.batch_size=8", "experts=synthetic", "logger=none",
         "callbacks=none"]
NETS = ["model.generator.base_channels=8", "model.generator.max_channels=64", "model.discriminator.base_channels=8",
        "model.discriminator.max_channels=32"]
METHODS = {
    "faceshifter": ["model=faceshifter", *NETS, "model.discriminator.num_layers=2"],
    "faceshifter_hear": ["model=faceshifter_hear", "model.generator.widths=[8,16,32]"],
    "hififace": ["model=hififace", *NETS],
}
METRICS = ("id_retrieval", "id_similarity", "truth_psnr_face", "truth_l1_face", "truth_ssim_face", "landmark_error")
EVAL_ROLES = ("identity_eval", "landmarks")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["faceshifter", "hififace"], choices=list(METHODS))
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per method (wall clock)")
    parser.add_argument("--eval-every", type=int, default=200, help="steps between evaluations")
    parser.add_argument("--identities", type=int, default=60, help="held-out people (one pair each, fixed gallery)")
    parser.add_argument("--save", action="store_true")
    return parser.parse_args(argv)


def protocol(identities: int):
    cfg = compose_run_config(CONF, "eval", ["evaluation=synthetic_truth", f"evaluation.dataset.num_identities={identities}",
                                            "evaluation.dataset.images_per_identity=1", "+evaluation.dataset.resolution=64"],
                             output_dir=tempfile.mkdtemp(prefix="swaplab_learning_"))
    return cfg.evaluation


def scorer(evaluation, *experts):
    dataset = hydra.utils.instantiate(evaluation.dataset)
    batch = dataset.__getitems__(list(range(len(dataset))))
    # built once: the retrieval gallery is embedded on first use and kept across reset()
    metrics = build_metrics({name: evaluation.metrics[name] for name in METRICS}, expert_lookup(*experts))

    def score(model) -> dict[str, float]:
        metrics.reset()
        evaluate_swaps(model, [batch], metrics, "cpu")
        return {k: round(v, 4) for k, v in metrics.compute().items()}

    return score


class Evaluate(pl.Callback):
    """Scores the held-out pairs every `every` steps and at the end; stops at the wall-clock budget."""

    def __init__(self, score, every: int, seconds: float) -> None:
        self.score, self.every, self.seconds, self.curve, self.start = score, every, seconds, [], time.time()

    def record(self, trainer, module) -> None:
        self.curve.append({"step": trainer.global_step, "seconds": round(time.time() - self.start, 1),
                           **self.score(module)})
        print(json.dumps(self.curve[-1]), file=sys.stderr, flush=True)

    def on_train_start(self, trainer, module) -> None:
        self.record(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self.record(trainer, module)
        if time.time() - self.start > self.seconds:
            trainer.should_stop = True

    def on_train_end(self, trainer, module) -> None:
        if not self.curve or self.curve[-1]["step"] != trainer.global_step:
            self.record(trainer, module)


def train(method: str, args: argparse.Namespace, evaluation, work: Path, aei_ckpt: Path | None) -> dict:
    overrides = [*SMALL, *METHODS[method]]
    if method == "faceshifter_hear":
        if aei_ckpt is None:
            raise SystemExit("faceshifter_hear trains on this run's faceshifter checkpoint: list faceshifter first")
        overrides.append(f"model.predecessor_ckpt={aei_ckpt}")
    cfg = compose_run_config(CONF, "train", overrides, output_dir=work / method)
    model, experts = build_model(cfg)
    score = scorer(evaluation, experts, build_missing_experts(experts, EVAL_ROLES, cfg.experts, None))
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    callback = Evaluate(score, args.eval_every, args.minutes * 60)
    trainer = pl.Trainer(max_steps=10**9, accelerator="cpu", logger=False, callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(work / method / "last.ckpt")
    return {"overrides": overrides, "steps": trainer.global_step, "curve": callback.curve,
            "config": OmegaConf.to_container(cfg.model, resolve=True)["loss_weights"]}


def references(evaluation) -> dict[str, dict[str, float]]:
    cfg = compose_run_config(CONF, "train", [*SMALL, *METHODS["faceshifter"]], output_dir=tempfile.mkdtemp())
    score = scorer(evaluation, build_missing_experts(None, EVAL_ROLES, cfg.experts, None))
    return {name: score(reference) for name, reference in build_references(evaluation.references).items()}


def plot(path: Path, result: dict) -> None:
    import matplotlib  # (slow to import) only for --save

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, key in zip(axes.flat, METRICS, strict=True):
        for method, run in result["methods"].items():
            ax.plot([p["step"] for p in run["curve"]], [p.get(key) for p in run["curve"]], marker=".", label=method)
        for (name, values), style in zip(result["references"].items(), (":", "--", "-."), strict=True):
            if key in values:
                ax.axhline(values[key], color="gray", linestyle=style, label=name.split("/")[-1])
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"learning on procedural faces, {result['identities']} held-out people, "
                 f"{result['minutes']} min per method on {result['machine']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    torch.manual_seed(0)
    evaluation = protocol(args.identities)
    work = Path(tempfile.mkdtemp(prefix="swaplab_learning_"))
    result = {"identities": args.identities, "minutes": args.minutes, "eval_every": args.eval_every,
              "machine": f"{torch.get_num_threads()} CPU threads", "references": references(evaluation), "methods": {}}
    for method in args.methods:
        aei = work / "faceshifter" / "last.ckpt" if "faceshifter" in result["methods"] else None
        result["methods"][method] = train(method, args, evaluation, work, aei)
    print(json.dumps(result, indent=1))
    if args.save:
        name = "learning_" + "_".join(args.methods)
        (HERE / "results" / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        plot(HERE / "results" / f"{name}.png", result)
    return result


if __name__ == "__main__":
    main()
