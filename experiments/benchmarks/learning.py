"""Does each method learn to swap? Train on procedural faces with experts=synthetic for a fixed CPU budget and
score held-out pairs against their true swaps every N steps (evaluation=synthetic_truth's metrics: ID retrieval
over every held-out person with the independent identity_eval network, similarity, error against the true swap
in the face, 68-landmark error), beside the reference rows copy_target / copy_source / true_swap.
Prints JSON; --save writes results/learning_<methods>.json and a learning-curve plot beside it.

    .venv/bin/python experiments/benchmarks/learning.py --methods faceshifter faceshifter_hear hififace --save
    .venv/bin/python experiments/benchmarks/learning.py --methods fsgan fast_faceswap --minutes 30 --save

Methods: faceshifter; faceshifter_hear (HEAR-Net on the faceshifter run of the same invocation, listed after
it); hififace; fsgan (the four stages chained, each from the previous stage's last.ckpt, sharing the method's
budget 10 / 50 / 20 / 20 %); fast_faceswap (procedural person `model.style_set.identity` as the style set; it has
no source, so it is scored by how far its outputs move toward that person: `style_similarity`, the eval
network's cosine to the mean of held-out renders of the style person; `style_wins`, the share of outputs
nearer the style person than the person they were made from; `style_copy_l1`, the distance to the nearest style
image it trained on, so that a memorised style photo shows; `content_match`, the share of outputs nearest (L1)
to their own input among all content faces, so that outputs that ignore their input show; references: the content faces themselves
(copy_target) and held-out renders of the style person).

The budget is CPU time divided by the torch threads, so other load on the machine slows a run down but does not
shorten its training; on an idle machine it is close to wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from swaplab.data.prepare import prepare_batch
from swaplab.data.style_sets import SyntheticStyleSet
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
SMALL_D = ["model.discriminator.base_channels=8", "model.discriminator.max_channels=32"]


@dataclass(frozen=True)
class Stage:
    name: str                       # its folder, and the key other stages name as `after`
    overrides: tuple[str, ...]
    share: float = 1.0              # of the method's budget
    after: str | None = None        # the stage whose last.ckpt is model.predecessor_ckpt


def fsgan_stage(stage: str, share: float, same_identity_rate: int, after: str | None) -> Stage:
    """An FSGAN stage with the pair kinds of its experiment (conf/experiment/fsgan_<stage>.yaml: never one image
    twice) and the CPU-demo widths of model=fsgan."""
    rates = [f"data.{split}.{name}={value}" for split in ("train", "val")
             for name, value in (("same_identity_rate", same_identity_rate), ("same_image_rate", 0))]
    return Stage(f"fsgan_{stage}", ("model=fsgan", f"model.stage={stage}", *SMALL_D, *rates), share,
                 after and f"fsgan_{after}")


METHODS: dict[str, list[Stage]] = {
    "faceshifter": [Stage("faceshifter", ("model=faceshifter", *NETS, "model.discriminator.num_layers=2"))],
    "faceshifter_hear": [Stage("faceshifter_hear", ("model=faceshifter_hear", "model.generator.widths=[8,16,32]"),
                               after="faceshifter")],
    "hififace": [Stage("hififace", ("model=hififace", *NETS))],
    "fsgan": [fsgan_stage("segmentation", 0.1, 0, None), fsgan_stage("reenactment", 0.5, 1, "segmentation"),
              fsgan_stage("inpainting", 0.2, 1, "reenactment"), fsgan_stage("blending", 0.2, 0, "inpainting")],
    "fast_faceswap": [Stage("fast_faceswap", ("experiment=fast_faceswap_synthetic",))],
}
METRICS = ("id_retrieval", "id_similarity", "truth_psnr_face", "truth_l1_face", "truth_ssim_face", "landmark_error")
STYLE_METRICS = ("style_similarity", "style_wins", "style_copy_l1", "content_match")
EVAL_ROLES = ("identity_eval", "landmarks")
Score = Callable[[torch.nn.Module], dict]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["faceshifter", "hififace"], choices=list(METHODS))
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="training budget per method: CPU minutes / torch threads (all stages together)")
    parser.add_argument("--eval-every", type=int, default=200, help="steps between evaluations")
    parser.add_argument("--identities", type=int, default=60, help="held-out people (one pair each, fixed gallery)")
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--replot", type=Path, help="redraw the plot of a saved results JSON and exit")
    return parser.parse_args(argv)


def protocol(identities: int):
    cfg = compose_run_config(CONF, "eval", ["evaluation=synthetic_truth", f"evaluation.dataset.num_identities={identities}",
                                            "evaluation.dataset.images_per_identity=1", "+evaluation.dataset.resolution=64"],
                             output_dir=tempfile.mkdtemp(prefix="swaplab_learning_"))
    return cfg.evaluation


def truth_scorer(evaluation, *experts) -> Score:
    dataset = hydra.utils.instantiate(evaluation.dataset)
    batch = dataset.__getitems__(list(range(len(dataset))))
    # built once: the retrieval gallery is embedded on first use and kept across reset()
    metrics = build_metrics({name: evaluation.metrics[name] for name in METRICS}, expert_lookup(*experts))

    def score(model) -> dict[str, float]:
        metrics.reset()
        evaluate_swaps(model, [batch], metrics, "cpu")
        return {k: round(v, 4) for k, v in metrics.compute().items()}

    return score


def style_scorer(cfg, lookup: Callable[[str], torch.nn.Module], identities: int) -> tuple[Score, dict[str, dict[str, float]]]:
    """Fast Face-swap's scorer (outputs against the style person) and its two reference rows."""
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    content = prepare_batch(datamodule.val_set.__getitems__(list(range(identities))))["target"]  # held out, aligned
    style = cfg.model.style_set
    # held-out renders of the style person (another seed than its training set): half give the centre, half the
    # reference row, so the row is not scored against itself
    renders = SyntheticStyleSet(style.identity, 2 * identities, cfg.data.resolution, seed=style.seed + 1).load()
    centre_renders, held_out_style = renders[:identities], renders[identities:]
    trained_style = SyntheticStyleSet(style.identity, style.num_images, cfg.data.resolution, seed=style.seed).load()
    embed = lookup("identity_eval")
    with torch.no_grad():
        style_centre = F.normalize(embed(centre_renders).mean(0), dim=0)
        own = embed(content)

    def measure(images: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            e = embed(images)
        to_style, to_own = e @ style_centre, (e * own).sum(1)
        # mean |.| per pixel to the nearest style image it trained on: near 0 would be a memorised style photo
        nearest = torch.cdist(images.flatten(1), trained_style.flatten(1), p=1).amin(1) / images[0].numel()
        # the content kept: is each output nearest (L1) to the face it was made from among all content faces?
        # (1 for copy-target, ~1/identities when every input gives the same face)
        own_content = torch.cdist(images.flatten(1), content.flatten(1), p=1).argmin(1) == torch.arange(len(images))
        return {"style_similarity": round(to_style.mean().item(), 4),
                "style_wins": round((to_style > to_own).float().mean().item(), 4),
                "style_copy_l1": round(nearest.mean().item(), 4),
                "content_match": round(own_content.float().mean().item(), 4)}

    def score(model) -> dict[str, float]:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out = model(content, content).swap
        model.train(was_training)
        return measure(out)

    return score, {"reference/copy_target": measure(content), "reference/style_person": measure(held_out_style)}


class Budget:
    """CPU seconds of this process per torch thread since start."""

    def __init__(self) -> None:
        self.cpu, self.wall, self.threads = time.process_time(), time.time(), torch.get_num_threads()

    def spent(self) -> float:
        return (time.process_time() - self.cpu) / self.threads

    def wall_seconds(self) -> float:
        return time.time() - self.wall


class Evaluate(pl.Callback):
    """Scores every `every` steps and at the end; stops when the stage's budget is spent."""

    def __init__(self, score: Score, every: int, budget: Budget, until: float, offset: int, curve: list) -> None:
        self.score, self.every, self.budget, self.until, self.offset, self.curve = score, every, budget, until, offset, curve

    def record(self, trainer, module) -> None:
        self.curve.append({"step": self.offset + trainer.global_step, "stage_step": trainer.global_step,
                           "budget_seconds": round(self.budget.spent(), 1),
                           "wall_seconds": round(self.budget.wall_seconds(), 1), **self.score(module)})
        print(json.dumps(self.curve[-1]), file=sys.stderr, flush=True)

    def on_train_start(self, trainer, module) -> None:
        self.record(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self.record(trainer, module)
        if self.budget.spent() > self.until:
            trainer.should_stop = True

    def on_train_end(self, trainer, module) -> None:
        if self.curve[-1]["step"] != self.offset + trainer.global_step:
            self.record(trainer, module)


def train(method: str, args: argparse.Namespace, evaluation, work: Path) -> dict:
    budget, curve, stages, offset, until = Budget(), [], {}, 0, 0.0
    references = None
    for stage in METHODS[method]:
        overrides = [*SMALL, *stage.overrides]
        if stage.after is not None:
            ckpt = work / stage.after / "last.ckpt"
            if not ckpt.is_file():
                raise SystemExit(f"{stage.name} trains on {stage.after}'s checkpoint: list its method first")
            overrides.append(f"model.predecessor_ckpt={ckpt}")
        cfg = compose_run_config(CONF, "train", overrides, output_dir=work / stage.name)
        model, experts = build_model(cfg)
        eval_experts = build_missing_experts(experts, EVAL_ROLES, cfg.experts, None)
        if method == "fast_faceswap":
            score, references = style_scorer(cfg, expert_lookup(experts, eval_experts), args.identities)
        else:
            score = truth_scorer(evaluation, experts, eval_experts)
        datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
        until += stage.share * args.minutes * 60
        callback = Evaluate(score, args.eval_every, budget, until, offset, curve)
        trainer = pl.Trainer(max_steps=10**9, accelerator="cpu", logger=False, callbacks=[callback],
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(model, datamodule=datamodule)
        trainer.save_checkpoint(work / stage.name / "last.ckpt")
        for point in curve:
            point.setdefault("stage", stage.name)
        offset += trainer.global_step
        stages[stage.name] = {"overrides": overrides, "steps": trainer.global_step,
                              "loss_weights": OmegaConf.to_container(cfg.model, resolve=True)["loss_weights"]}
    return {"stages": stages, "steps": offset, "curve": curve,
            **({"references": references} if references is not None else {})}


def references(evaluation) -> dict[str, dict[str, float]]:
    cfg = compose_run_config(CONF, "train", [*SMALL, *METHODS["faceshifter"][0].overrides], output_dir=tempfile.mkdtemp())
    score = truth_scorer(evaluation, build_missing_experts(None, EVAL_ROLES, cfg.experts, None))
    return {name: score(reference) for name, reference in build_references(evaluation.references).items()}


def plot(path: Path, result: dict) -> None:
    import matplotlib  # (slow to import) only for --save

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in (*METRICS, *STYLE_METRICS) if any(k in p for run in result["methods"].values() for p in run["curve"])]
    rows = -(-len(keys) // 3)
    fig, axes = plt.subplots(rows, 3, figsize=(13, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys, strict=False):
        lines = dict(result["references"])
        for method, run in result["methods"].items():
            points = [p for p in run["curve"] if key in p]
            if points:
                ax.plot([p["step"] for p in points], [p[key] for p in points], marker=".", label=method)
                lines.update(run.get("references", {}))
        for (name, values), style in zip(lines.items(), (":", "--", "-.", ":", "--"), strict=False):
            if key in values:
                ax.axhline(values[key], color="gray", linestyle=style, label=name.split("/")[-1])
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(f"learning on procedural faces, {result['identities']} held-out people, "
                 f"{result['minutes']} min per method ({result['machine']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.replot:
        result = json.loads(args.replot.read_text())
        plot(args.replot.with_suffix(".png"), result)
        return result
    torch.manual_seed(0)
    evaluation = protocol(args.identities)
    work = Path(tempfile.mkdtemp(prefix="swaplab_learning_"))
    result = {"identities": args.identities, "minutes": args.minutes, "eval_every": args.eval_every,
              "machine": f"{torch.get_num_threads()} CPU threads, budget = CPU time / threads",
              "references": references(evaluation), "methods": {}}
    for method in args.methods:
        result["methods"][method] = train(method, args, evaluation, work)
    print(json.dumps(result, indent=1))
    if args.save:
        name = "learning_" + "_".join(args.methods)
        (HERE / "results" / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        plot(HERE / "results" / f"{name}.png", result)
    return result


if __name__ == "__main__":
    main()
