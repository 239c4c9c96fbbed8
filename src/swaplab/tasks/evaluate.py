"""evaluate(cfg): one evaluation protocol (conf/evaluation/*.yaml) on one or more checkpoints of any method.

Every checkpoint is scored by the same metric experts (`experts=...`, else the first checkpoint's experts
config, built once) on the protocol's pairs at its own resolution and crop template. Written to
`results_dir` (default `<run dir>/results/<protocol>`):

- `per_example.csv`: one row per checkpoint and swap: the example's ids (index, videos / identities, frames)
  and every per-example score;
- `summary.json`: the protocol config, the metric experts (role, network, weights), and per checkpoint its
  path, sha256, model class, example count, throughput, summary metrics and details (e.g. ID retrieval per
  source video);
- `table.md`: the summary metrics as a markdown table (4 decimals);
- `comparison.png`: one bar chart per headline metric, one bar per checkpoint.
"""

from __future__ import annotations

import json
import time
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
from swaplab.metrics.reports import comparison_plot, markdown_table, write_csv
from swaplab.metrics.runner import evaluate_swaps
from swaplab.models.loading import build_experts, load_swap_model
from swaplab.runtime import get_logger, resolve_device
from swaplab.tasks.instantiate import instantiate_map

log = get_logger(__name__)

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
    limit = protocol.get("max_pairs")
    if not limit:
        return dataset
    if hasattr(dataset, "swaps") and hasattr(dataset, "crop_keys"):  # FaceForensicsPairs
        keys = torch.from_numpy(dataset.crop_keys)
        videos = torch.stack([keys[dataset.sample_target, 0], keys[dataset.sample_source, 0]], 1).tolist()
        kept = {(int(t), int(s)) for t, s in dataset.swaps[:limit]}
        return Subset(dataset, [i for i, pair in enumerate(videos) if tuple(pair) in kept])
    return Subset(dataset, list(range(min(int(limit), len(dataset)))))


def metric_experts(cfg: DictConfig, run_cfg: DictConfig, metrics: SwapMetrics) -> torch.nn.Module:
    """The experts the metrics use, built once: `cfg.experts`, else the checkpoint's experts config. Roles the
    config lacks are left to the metric (FID loads its own Inception) or to its error message."""
    experts_cfg = cfg.experts if cfg.get("experts") is not None else run_cfg.experts
    roles = [r for r in metrics.roles() if r in experts_cfg]
    return build_experts(experts_cfg, roles)


def checkpoint_name(path: Path, model: str, taken: set[str]) -> str:
    base = name = f"{model}:{path.stem}"
    n = 1
    while name in taken:
        n += 1
        name = f"{base}#{n}"
    taken.add(name)
    return name


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate every checkpoint of `cfg.ckpt` under `cfg.evaluation`; returns the summary written to JSON."""
    protocol = cfg.get("evaluation")
    if not protocol or not protocol.get("metrics"):
        raise ValueError("eval.py needs an evaluation protocol with metrics: evaluation=ffpp | synthetic")
    paths = list(cfg.ckpt) if isinstance(cfg.ckpt, ListConfig) else [cfg.ckpt]
    paths = [Path(p) for p in dict.fromkeys(str(p) for p in paths)]
    device = resolve_device(str(cfg.get("device", "auto")))
    metrics: SwapMetrics | None = None
    experts = None
    results, rows, taken = [], [], set()
    for path in paths:
        model, run_cfg = load_swap_model(path, cfg.get("experts"))
        model.to(device)
        if metrics is None:
            metrics = build_metrics(protocol.metrics)
            experts = metric_experts(cfg, run_cfg, metrics)
            metrics = build_metrics(protocol.metrics, experts)
            experts.to(device)
            metrics.to(device)
        experts.set_input_template(run_cfg.data.get("template"))
        metrics.reset()
        dataset = protocol_dataset(protocol, run_cfg)
        loader = DataLoader(dataset, batch_size=int(protocol.batch_size), shuffle=False, collate_fn=collate_swaps,
                            num_workers=int(protocol.get("num_workers", 0)), pin_memory=device.type == "cuda")
        start = time.perf_counter()
        examples = evaluate_swaps(model, loader, metrics, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        model_name = run_cfg.model._target_.rsplit(".", 1)[-1]
        name = checkpoint_name(path, model_name, taken)
        count = len(next(iter(examples.values()))) if examples else 0
        results.append({"name": name, "path": str(path), "sha256": sha256_of(path), "model": model_name,
                        "resolution": int(run_cfg.data.resolution), "num_examples": count,
                        "seconds": round(seconds, 3), "swaps_per_second": round(count / max(seconds, 1e-9), 2),
                        "metrics": metrics.compute(), "details": metrics.details(),
                        "model_experts": model.experts.describe()})
        per_example = metrics.per_example()
        columns = {**{k: v.tolist() for k, v in examples.items()}, **{k: v.tolist() for k, v in per_example.items()}}
        rows += [{"checkpoint": name, **{k: v[i] for k, v in columns.items()}} for i in range(count)]
        log.info("%s (%s): %s", name, path, results[-1]["metrics"])
        del model
    summary = {"protocol": OmegaConf.to_container(protocol, resolve=True), "metric_experts": metrics.describe(),
               "checkpoints": results, "files": FILES}
    write_results(Path(cfg.results_dir), summary, rows, metrics)
    if cfg.get("logger"):
        log_to_loggers(cfg, summary, Path(cfg.results_dir))
    return summary


def headline_columns(metrics: SwapMetrics, summary: dict[str, Any]) -> tuple[list[str], dict[str, bool | None]]:
    columns = list(summary["checkpoints"][0]["metrics"]) if summary["checkpoints"] else []
    directions = {c: metrics[c.split("/")[0]].higher_is_better for c in columns}
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
                                      + markdown_table(summary["checkpoints"], columns, directions))
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
    for logger in instantiate_map(logger_cfg, "logger"):
        for step, result in enumerate(summary["checkpoints"]):
            logger.log_metrics({f"eval/{k}": v for k, v in result["metrics"].items()}, step=step)
        if hasattr(logger, "log_table"):
            columns = ["checkpoint", "model", *summary["checkpoints"][0]["metrics"]]
            data = [[r["name"], r["model"], *r["metrics"].values()] for r in summary["checkpoints"]]
            logger.log_table(key="eval/results", columns=columns, data=data)
        if hasattr(logger, "log_image"):
            logger.log_image(key="eval/comparison", images=[np.asarray(Image.open(out / FILES["plot"]).convert("RGB"))])
        logger.finalize("success")
