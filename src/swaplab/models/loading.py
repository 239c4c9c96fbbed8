"""Building a model from config, and rebuilding one from a swaplab checkpoint alone."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from swaplab.errors import plain_user_errors
from swaplab.experts import Experts
from swaplab.io.checkpoints import safe_torch_load
from swaplab.runtime import get_logger

log = get_logger(__name__)


def expert_roles(cfg: DictConfig) -> list[str]:
    """The roles a run builds: those its model class requires, plus `experts_extra` (e.g. for evaluation)."""
    model_class = hydra.utils.get_class(cfg.model._target_)
    roles = list(getattr(model_class, "required_experts", ()))
    return roles + [r for r in cfg.get("experts_extra") or () if r not in roles]


def build_experts(experts_cfg: DictConfig, roles: list[str] | None = None) -> Any:
    """Instantiate the experts config, keeping only `roles` (None: all); a full pretrained set is several
    hundred MB of networks, so a run loads only what it uses."""
    if roles is not None:
        known = [k for k in experts_cfg if not str(k).startswith("_")]
        missing = [r for r in roles if r not in known]
        if missing:
            raise ValueError(f"the experts config has no role {missing}; it defines {known}")
    with plain_user_errors():
        if roles is None:
            return hydra.utils.instantiate(experts_cfg, _convert_="all")
        container = hydra.utils.get_class(experts_cfg._target_)  # role by role: keeps interpolation context
        return container(**{r: hydra.utils.instantiate(experts_cfg[r], _convert_="all") for r in roles})


def build_missing_experts(have: Experts | None, roles: Iterable[str], experts_cfg: DictConfig | Mapping | None,
                          template: str | None = None, *, only_configured: bool = False, hint: str = "") -> Experts:
    """The experts of `roles` that `have` (e.g. a model's own experts; None: none) lacks, built once from
    `experts_cfg` (a run's experts config, or its plain dict from a checkpoint) with their input template set to
    `template`; an empty set when nothing is missing. Use them next to `have` (a lookup that tries both), not
    merged into it: the template hooks belong to the set that built them. `only_configured`: roles the config
    does not define are left out (whoever needs them raises its own error) instead of failing here."""
    missing = [r for r in dict.fromkeys(roles) if have is None or r not in have]
    if only_configured and experts_cfg is not None:
        missing = [r for r in missing if r in experts_cfg]
    if not missing:
        return Experts()
    if not experts_cfg:
        raise ValueError(f"experts {missing} are needed, and there is no experts config to build them from{hint}")
    cfg = experts_cfg if isinstance(experts_cfg, DictConfig) else OmegaConf.create(dict(experts_cfg))
    built = build_experts(cfg, missing)
    built.set_input_template(template)
    return built


def build_model(cfg: DictConfig) -> tuple[pl.LightningModule, Any]:
    """Experts once, then the model that shares them."""
    experts = build_experts(cfg.experts, expert_roles(cfg))
    if hasattr(experts, "set_input_template"):  # experts re-crop the training crops
        model_class = hydra.utils.get_class(cfg.model._target_)
        experts.set_input_template(cfg.get("data", {}).get("template"),
                                   tuple(getattr(model_class, "experts_on_own_crops", ())))
    if hasattr(experts, "set_precision"):
        experts.set_precision(cfg.get("experts_precision") or "fp32")
    model = hydra.utils.instantiate(cfg.model, experts=experts, _convert_="all")
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    return model, experts


def checkpoint_config(checkpoint: dict[str, Any], path: str | Path) -> DictConfig:
    meta = checkpoint.get("swaplab")
    if not isinstance(meta, dict) or not meta.get("config"):
        raise ValueError(f"{path} is not a swaplab training checkpoint (it has no 'swaplab' config entry)")
    return OmegaConf.create(meta["config"])


def resolve_here(experts_cfg: DictConfig, weights_dir: str | Path) -> DictConfig:
    """A checkpoint's recorded experts config with its files looked up on this machine: every `weights_dir` is
    this machine's, and a recorded file path (`path`, `*_path`) that does not exist here becomes the file of
    that name in `weights_dir` (when it is there; else the expert's loader names the missing file)."""
    resolved = experts_cfg.copy()
    for role in resolved:
        node = resolved[role]
        if not isinstance(node, DictConfig):
            continue
        for key in list(node):
            value = node[key]
            if key == "weights_dir":
                node[key] = str(weights_dir)
            elif (key == "path" or str(key).endswith("_path")) and isinstance(value, str) and value \
                    and not Path(value).exists() and (Path(weights_dir) / Path(value).name).is_file():
                node[key] = str(Path(weights_dir) / Path(value).name)
    return resolved


def load_swap_model(path: str | Path, experts: DictConfig | None = None,
                    weights_dir: str | Path | None = None) -> tuple[pl.LightningModule, DictConfig]:
    """The trained model of a checkpoint (eval mode, CPU) and its run config.

    `experts` replaces the experts recorded in the checkpoint (e.g. other weight paths on this machine);
    `weights_dir` keeps the recorded experts and finds their files in this machine's weights folder instead
    (`resolve_here`). Experts whose weights differ from those recorded at training (sha256) are logged.
    """
    checkpoint = safe_torch_load(path)
    cfg = checkpoint_config(checkpoint, path)
    if experts is not None:
        cfg.experts = experts
    elif weights_dir is not None:
        cfg.experts = resolve_here(cfg.experts, weights_dir)
    model, built = build_model(cfg)
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    recorded = checkpoint["swaplab"].get("experts") or {}
    for role, info in built.describe().items():
        trained_with = (recorded.get(role) or {}).get("sha256")
        if trained_with and trained_with != info["sha256"]:
            log.warning("%s was trained with other '%s' weights (sha256 %s) than those built here (%s, %s): its "
                        "swaps will differ", path, role, trained_with[:12], info["sha256"][:12], info["weights"])
    return model.eval(), cfg
