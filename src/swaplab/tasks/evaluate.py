"""evaluate(cfg): one evaluation protocol (conf/evaluation/*.yaml) on one or more checkpoints of any method.

Every checkpoint swaps with the experts it was trained with (its recorded experts config, files looked up in
this machine's `paths.weights_dir`) and is scored by the same metric experts (`metric_experts=...`, else the
first checkpoint's experts config, built once) on the protocol's pairs at its own resolution and crop
template. Written to `results_dir` (default `<run dir>/results/<protocol>`):

- `per_example.csv`: one row per checkpoint and swap: the example's ids (index, videos / identities, frames)
  and every per-example score;
- `summary.json`: the protocol config, the metric experts (role, network, weights, weights sha256), and per
  checkpoint its path, sha256, model class, its own experts, example count, throughput, summary metrics and
  details (ID retrieval per source video and its gallery's size, FF++ samples without a face per swap video);
- `table.md`: the summary metrics as a markdown table (4 decimals), then each metric's networks and weights;
- `comparison.png`: one bar chart per headline metric, one bar per checkpoint.

The protocol's `references` (e.g. `[copy_target, copy_source, true_swap]`, swaplab.metrics.references) add rows
`reference/<name>` to every file: stand-in models whose swap is read from the batch, scored by the same metrics
and loop, once per data setup (resolution, template) of the checkpoints, or alone with `ckpt=[]` at the
protocol's `reference_resolution` (the metric experts then come from `metric_experts=...`). A reference needing
data the protocol lacks (`true_swap` without true swaps) fails before anything is scored. `videos=<dir>` adds a
row `videos/<method>` that scores existing swap videos (FF++'s manipulated videos) the same way.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from swaplab.data.datamodule import collate_swaps
from swaplab.errors import plain_user_errors
from swaplab.experts.registry import sha256_of
from swaplab.metrics import SwapMetrics, build_metrics
from swaplab.metrics.references import SwapVideos, build_references, check_reference_data
from swaplab.metrics.reports import comparison_plot, markdown_table, networks_table, write_csv
from swaplab.metrics.runner import evaluate_swaps
from swaplab.models.loading import build_missing_experts, load_swap_model
from swaplab.runtime import get_logger, resolve_device
from swaplab.tasks.instantiate import instantiate_map
from swaplab.tasks.lifecycle import close_at_task_end, task_wrapper

log = get_logger(__name__)

MISSING_FACES = ("drop", "fail")  # samples with a frame without a face: left out | scored as failures
FILES = {"per_example": "per_example.csv", "summary": "summary.json", "table": "table.md", "plot": "comparison.png"}


def protocol_dataset(protocol: DictConfig, run_cfg: DictConfig) -> Dataset:
    """The protocol's pairs at the checkpoint's resolution (and crop template, where the dataset takes one),
    limited to the first `max_pairs` swaps (FF++: (target, source) videos with all their frames)."""
    node = protocol.dataset
    kwargs: dict[str, Any] = {"resolution": int(run_cfg.data.resolution)}
    if "template" in node and node.template is None:
        kwargs["template"] = run_cfg.data.get("template") or "faceshifter_256"
    with plain_user_errors():
        dataset = hydra.utils.instantiate(node, **kwargs, _convert_="all")
        # the method's view of its pairs, as in training (Fast Face-swap: aligned by 68 points to its template)
        wrap = run_cfg.data.get("wrap")
        view = hydra.utils.instantiate(wrap, _convert_="all") if wrap else lambda pairs: pairs
    limit = protocol.get("max_pairs")
    if not limit:
        return view(dataset)
    if hasattr(dataset, "swaps") and hasattr(dataset, "crop_keys"):  # FaceForensicsPairs
        keys = torch.from_numpy(dataset.crop_keys)
        videos = torch.stack([keys[dataset.sample_target, 0], keys[dataset.sample_source, 0]], 1).tolist()
        kept = {(int(t), int(s)) for t, s in dataset.swaps[:limit]}
        return view(Subset(dataset, [i for i, pair in enumerate(videos) if tuple(pair) in kept]))
    return view(Subset(dataset, list(range(min(int(limit), len(dataset))))))


def frames_without_face(dataset: Dataset, protocol: DictConfig) -> dict[str, int] | None:
    """Per swap `<target>_<source>` of the protocol's scope (`max_pairs`), its samples dropped because a frame
    had no face (only swaps with some); None when the protocol's data does not look for faces (procedural)."""
    base = dataset
    while not hasattr(base, "faceless") and hasattr(base, "dataset"):  # through Subset and a method's view
        base = base.dataset
    if not hasattr(base, "faceless"):
        return None
    scope = {(int(t), int(s)) for t, s in base.swaps[:protocol.get("max_pairs") or None]}
    return dict(Counter(f"{t:03d}_{s:03d}" for t, _, s, _ in base.faceless if (t, s) in scope))


def with_failures(values: dict[str, float], metrics: SwapMetrics, scored: int, faceless: int,
                  missing_faces: str) -> dict[str, float]:
    """`values` plus `frames_without_face`; with missing_faces=fail, metrics that define a failure score
    (ID retrieval: a miss) count each faceless sample as a failure."""
    out = {**values, "frames_without_face": float(faceless)}
    if missing_faces == "fail" and faceless:
        for key, value in values.items():
            failure = metrics[key.split("/")[0]].failure_score
            if failure is not None:
                out[key] = (value * scored + failure * faceless) / (scored + faceless)
    return out


def read_swap_videos(protocol: DictConfig, videos: Path) -> None:
    """Make the protocol's pairs the swap videos in `videos` (`<target>_<source>`), read as `fake`."""
    if "fakes" not in protocol.dataset:
        raise ValueError(f"videos= scores FF++ swap videos: it needs evaluation=ffpp (evaluation.dataset has no "
                         f"'fakes'; the protocol is {protocol.get('name')})")
    if not videos.is_dir():
        raise ValueError(f"videos={videos} is not a folder of <target>_<source> swap videos")
    with open_dict(protocol):
        protocol.dataset.fakes = str(videos)


def swap_videos_row(videos: Path) -> str:
    """The row name of scored swap videos: `videos/<method>` for FF++'s manipulated_sequences/<method>/<c>/videos."""
    parts = videos.resolve().parts
    method = parts[-3] if len(parts) >= 3 and parts[-1] == "videos" else videos.name
    return f"videos/{method}"


def metric_experts(cfg: DictConfig, run_cfg: DictConfig, metrics: SwapMetrics) -> torch.nn.Module:
    """The experts the metrics use, built once: `cfg.metric_experts`, else the checkpoint's experts config (its
    files found on this machine). Roles the config lacks are left to the metric (FID loads its own Inception)
    or to its error message. The checkpoints' own experts are never replaced by these."""
    experts_cfg = cfg.metric_experts if cfg.get("metric_experts") is not None else run_cfg.experts
    return build_missing_experts(None, metrics.roles(), experts_cfg, run_cfg.data.get("template"),
                                 only_configured=True)


def checkpoint_name(path: Path, model: str, taken: set[str]) -> str:
    base = name = f"{model}:{path.stem}"
    n = 1
    while name in taken:
        n += 1
        name = f"{base}#{n}"
    taken.add(name)
    return name


def checkpoint_paths(cfg: DictConfig) -> list[Path]:
    """`cfg.ckpt` (one path, a list, or [] / null for reference rows alone), without repeats."""
    raw = cfg.ckpt
    paths = [] if raw is None else list(raw) if isinstance(raw, ListConfig) else [raw]
    return [Path(p) for p in dict.fromkeys(str(p) for p in paths)]


def reference_run_config(cfg: DictConfig, protocol: DictConfig) -> DictConfig:
    """The data setup of reference rows scored without a checkpoint: `reference_resolution`, canonical crops."""
    if cfg.get("metric_experts") is None:
        raise ValueError("scoring reference rows alone (no ckpt) needs the metric experts: "
                         "metric_experts=pretrained | offline | random")
    if not protocol.get("reference_resolution"):
        raise ValueError("scoring reference rows alone (no ckpt) needs evaluation.reference_resolution")
    return OmegaConf.create({"data": {"resolution": int(protocol.reference_resolution), "template": None}})


def data_setup(run_cfg: DictConfig) -> tuple[int, str | None]:
    return int(run_cfg.data.resolution), run_cfg.data.get("template")


def score(model: torch.nn.Module, dataset: Dataset, protocol: DictConfig, metrics: SwapMetrics,
          device: torch.device) -> tuple[dict[str, torch.Tensor], float]:
    """Run `model` (a checkpoint or a reference) over the protocol's pairs: the examples' ids and the seconds."""
    metrics.reset()
    loader = DataLoader(dataset, batch_size=int(protocol.batch_size), shuffle=False, collate_fn=collate_swaps,
                        num_workers=int(protocol.get("num_workers", 0)), pin_memory=device.type == "cuda")
    start = time.perf_counter()
    examples = evaluate_swaps(model, loader, metrics, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return examples, time.perf_counter() - start


def scored_row(name: str, examples: dict[str, torch.Tensor], seconds: float, metrics: SwapMetrics,
               rows: list[dict[str, Any]], faceless: dict[str, int] | None, missing_faces: str,
               **info: Any) -> dict[str, Any]:
    """The summary entry of one scored row (checkpoint or reference); its per-example rows go to `rows`.
    `faceless`: the samples without a face per swap video (None: not counted), under `missing_faces`."""
    count = len(next(iter(examples.values()))) if examples else 0
    values, details = metrics.compute(), metrics.details()
    if faceless is not None:
        values = with_failures(values, metrics, count, sum(faceless.values()), missing_faces)
        details["frames_without_face"] = faceless
    result = {"name": name, **info, "num_examples": count, "seconds": round(seconds, 3),
              "swaps_per_second": round(count / max(seconds, 1e-9), 2), "metrics": values, "details": details}
    per_example = metrics.per_example()
    columns = {**{k: v.tolist() for k, v in examples.items()}, **{k: v.tolist() for k, v in per_example.items()}}
    rows += [{"checkpoint": name, **{k: v[i] for k, v in columns.items()}} for i in range(count)]
    log.info("%s: %s", name, result["metrics"])
    return result


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate every checkpoint of `cfg.ckpt` under `cfg.evaluation`; returns the summary written to JSON.
    Its loggers are closed when it returns or raises (swaplab.tasks.lifecycle)."""
    protocol = cfg.get("evaluation")
    if not protocol or not protocol.get("metrics"):
        raise ValueError("eval.py needs an evaluation protocol with metrics: evaluation=ffpp | synthetic")
    missing_faces = protocol.get("missing_faces", "drop")
    if missing_faces not in MISSING_FACES:
        raise ValueError(f"evaluation.missing_faces must be one of {list(MISSING_FACES)}, got {missing_faces!r}")
    if cfg.get("experts") is not None:
        raise ValueError("eval.py takes no experts=...: a checkpoint always swaps with the experts it was trained "
                         "with (their files looked up in paths.weights_dir); the metrics' networks are "
                         "metric_experts=...")
    paths = checkpoint_paths(cfg)
    references = build_references(protocol.get("references"))
    if cfg.get("videos"):
        read_swap_videos(protocol, Path(cfg.videos))
        references[swap_videos_row(Path(cfg.videos))] = SwapVideos()
    if not paths and not references:
        raise ValueError("eval.py needs ckpt=<path or [a.ckpt,b.ckpt]> (ckpt=[] only with evaluation.references)")
    device = resolve_device(str(cfg.get("device", "auto")))
    metrics: SwapMetrics | None = None
    experts = None
    results, rows, taken = [], [], set()
    setups: dict[tuple[int, str | None], DictConfig] = {}  # data setups scored, each with a run config

    def prepare(run_cfg: DictConfig) -> Dataset:
        """Metrics and experts (built once), the experts' input template and the protocol's pairs for a run."""
        nonlocal metrics, experts
        if metrics is None:
            metrics = build_metrics(protocol.metrics)
            experts = metric_experts(cfg, run_cfg, metrics)
            metrics = build_metrics(protocol.metrics, experts)
            experts.to(device)
            metrics.to(device)
        experts.set_input_template(run_cfg.data.get("template"))
        metrics.set_input_template(run_cfg.data.get("template"))
        metrics.prepare(int(run_cfg.data.resolution), device)  # e.g. the ID-retrieval gallery, before scoring
        dataset = protocol_dataset(protocol, run_cfg)
        if references and data_setup(run_cfg) not in setups and len(dataset):  # before anything is scored
            check_reference_data(references, dataset[0])
        setups.setdefault(data_setup(run_cfg), run_cfg)
        return dataset

    for path in paths:
        model, run_cfg = load_swap_model(path, weights_dir=cfg.paths.weights_dir)
        model.to(device)
        dataset = prepare(run_cfg)
        examples, seconds = score(model, dataset, protocol, metrics, device)
        model_name = run_cfg.model._target_.rsplit(".", 1)[-1]
        results.append(scored_row(checkpoint_name(path, model_name, taken), examples, seconds, metrics, rows,
                                  frames_without_face(dataset, protocol), missing_faces, path=str(path),
                                  sha256=sha256_of(path), model=model_name, resolution=int(run_cfg.data.resolution),
                                  model_experts=model.experts.describe()))
        del model
    if references and not setups:  # references alone
        prepare(reference_run_config(cfg, protocol))
    for (resolution, template), run_cfg in list(setups.items()) if references else []:
        dataset = prepare(run_cfg)
        for row, reference in references.items():
            name = row if len(setups) == 1 else f"{row}@{resolution}px/{template or 'canonical'}"
            examples, seconds = score(reference, dataset, protocol, metrics, device)
            results.append(scored_row(name, examples, seconds, metrics, rows, frames_without_face(dataset, protocol),
                                      missing_faces, path=None, sha256=None, model="reference",
                                      resolution=resolution, model_experts={}))
    summary = {"protocol": OmegaConf.to_container(protocol, resolve=True), "metric_experts": metrics.describe(),
               "checkpoints": results, "files": FILES}
    write_results(Path(cfg.results_dir), summary, rows, metrics)
    if cfg.get("logger"):
        log_to_loggers(cfg, summary, Path(cfg.results_dir))
    return summary


def headline_columns(metrics: SwapMetrics, summary: dict[str, Any]) -> tuple[list[str], dict[str, bool | None]]:
    columns = list(summary["checkpoints"][0]["metrics"]) if summary["checkpoints"] else []
    directions = {c: metrics[c.split("/")[0]].higher_is_better if c.split("/")[0] in metrics.keys() else None
                  for c in columns}
    for c in columns:  # per-angle and top-k columns keep their metric's direction; ids carry none
        if c.endswith("/retrieved"):
            directions[c] = None
    return columns, directions


def write_results(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]], metrics: SwapMetrics) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / FILES["per_example"], rows)
    (out / FILES["summary"]).write_text(json.dumps(summary, indent=2))
    columns, directions = headline_columns(metrics, summary)
    (out / FILES["table"]).write_text(f"# {summary['protocol'].get('name', 'evaluation')}\n\n"
                                      + markdown_table(summary["checkpoints"], columns, directions)
                                      + "\n" + networks_table(summary["metric_experts"]))
    headline = [c for c in columns if "/" not in c]
    comparison_plot(out / FILES["plot"], summary["checkpoints"], headline, directions,
                    title=f"protocol: {summary['protocol'].get('name', '')}")
    log.info("Evaluation results in %s", out)


def log_to_loggers(cfg: DictConfig, summary: dict[str, Any], out: Path) -> None:
    """Summary metrics per checkpoint, the results table and the plot to the configured loggers (W&B)."""
    logger_cfg = cfg.logger.copy()
    if "wandb" in logger_cfg:
        with open_dict(logger_cfg):  # the train-time name and group interpolate the model choice
            logger_cfg.wandb.name = f"eval-{summary['protocol'].get('name', '')}"
            logger_cfg.wandb.group = "eval"
    for logger in close_at_task_end(instantiate_map(logger_cfg, "logger")):  # closed as evaluate() ends
        for step, result in enumerate(summary["checkpoints"]):
            logger.log_metrics({f"eval/{k}": v for k, v in result["metrics"].items()}, step=step)
        if hasattr(logger, "log_table"):
            columns = ["checkpoint", "model", *summary["checkpoints"][0]["metrics"]]
            data = [[r["name"], r["model"], *r["metrics"].values()] for r in summary["checkpoints"]]
            logger.log_table(key="eval/results", columns=columns, data=data)
        if hasattr(logger, "log_image"):
            logger.log_image(key="eval/comparison", images=[np.asarray(Image.open(out / FILES["plot"]).convert("RGB"))])
