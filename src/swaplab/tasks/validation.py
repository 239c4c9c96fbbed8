"""Start-up checks: a bad config value fails before any model is built, with every problem listed."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from swaplab.errors import ConfigError


def _is_power_of_two(n: object) -> bool:
    return isinstance(n, int) and n >= 8 and n & (n - 1) == 0


def validate_train_config(cfg: DictConfig) -> None:
    problems: list[str] = []
    data, trainer = cfg.get("data"), cfg.get("trainer")
    if data is None or trainer is None or cfg.get("model") is None or cfg.get("experts") is None:
        raise ConfigError("train needs the config groups data, model, experts and trainer")

    missing = [str(k) for k in cfg if OmegaConf.is_missing(cfg, k)]
    if missing:
        problems.extend(f"{k} is required by this config (e.g. {k}=<value>)" for k in missing)
    if not _is_power_of_two(data.get("resolution")):
        problems.append(f"data.resolution must be a power of two >= 8, got {data.get('resolution')}")
    batch = data.get("batch_size")
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    if not isinstance(batch, int) or batch < 1:
        problems.append(f"data.batch_size must be a positive integer, got {batch}")
    elif isinstance(devices, int) and devices > 0 and batch % (devices * nodes):
        problems.append(f"data.batch_size={batch} (global) is not divisible by {devices * nodes} processes "
                        f"(trainer.devices={devices} x trainer.num_nodes={nodes})")
    workers = data.get("num_workers", 0)
    if not isinstance(workers, int) or workers < 0:
        problems.append(f"data.num_workers must be an integer >= 0, got {workers}")

    max_steps, max_epochs = trainer.get("max_steps", -1), trainer.get("max_epochs", -1)
    if (max_steps is None or max_steps <= 0) and (max_epochs is None or max_epochs <= 0) \
            and not trainer.get("fast_dev_run"):
        problems.append("set trainer.max_steps (iterations) or trainer.max_epochs to a positive value")

    for name, weight in (cfg.model.get("loss_weights") or {}).items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            problems.append(f"model.loss_weights.{name} must be a number >= 0, got {weight!r}")

    defined = [str(k) for k in cfg.experts if not str(k).startswith("_")]
    extra = cfg.get("experts_extra") or []
    unknown = [r for r in extra if r not in defined]
    if unknown:
        problems.append(f"experts_extra names roles {unknown} that the experts config does not "
                        f"define (it defines {defined})")

    precision = cfg.get("experts_precision") or "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        problems.append(f"experts_precision must be fp32, bf16 or fp16, got {precision!r}")

    trainer_precision = str(trainer.get("precision", "32-true"))
    if trainer_precision in ("bf16-true", "16-true", "bf16", "16", "half"):
        # Lightning casts float batch tensors before the transfer hooks: the loaders' template-warp matrices
        # would lose pixels in 16 bits and the uint8 crops become float only after the cast
        problems.append(f"trainer.precision={trainer_precision} (half-precision weights) is not supported: "
                        "use bf16-mixed or 16-mixed")

    ckpt = cfg.get("ckpt_path")
    if ckpt and not Path(ckpt).is_file():
        problems.append(f"ckpt_path={ckpt} does not exist")

    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
