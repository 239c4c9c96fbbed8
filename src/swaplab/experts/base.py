"""Frozen pretrained networks shared by generators, losses and metrics.

A `FrozenExpert` keeps its network outside the module tree: it moves with `.to()` / `.half()` like a
child, but its parameters are invisible to optimizers, DDP, `state_dict()` and `.train()`. So an expert
is never trained, never stored in a checkpoint, stays in eval mode and can be shared by reference
(deep copies, e.g. for a generator EMA, return the same instance).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swaplab.faces.templates import CANONICAL, convert_crops, get_template
from swaplab.runtime import get_logger

log = get_logger(__name__)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] RGB -> ImageNet-normalised RGB (torchvision convention)."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


class FrozenExpert(nn.Module):
    """Wraps a pretrained network `net`; subclasses define `forward` in terms of `self.net`."""

    def __init__(self, net: nn.Module, name: str, weights: str = "random") -> None:
        super().__init__()
        net.eval().requires_grad_(False)
        self.__dict__["net"] = net  # hidden from the module tree on purpose (see module docstring)
        self.name = name
        self.weights = weights  # where the weights came from: a file path, "random", or a package name
        self.training = False
        self.autocast_dtype: torch.dtype | None = None  # reduced precision (Experts.set_precision); None: fp32
        if weights == "random":
            log.warning("Expert '%s' uses RANDOM weights (tests / quickstart only); results mean nothing.", name)

    def _apply(self, fn: Any, recurse: bool = True) -> FrozenExpert:
        self.net._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> FrozenExpert:
        return super().train(False)  # always eval: BatchNorm statistics and dropout stay frozen

    def __deepcopy__(self, memo: dict) -> FrozenExpert:
        return self  # one instance per run, shared by reference

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        # Build an autograd graph only when a gradient has to flow back through an input.
        needs_grad = torch.is_grad_enabled() and any(
            isinstance(x, torch.Tensor) and x.requires_grad for x in (*inputs, *kwargs.values())
        )
        if self.autocast_dtype is None:
            with torch.set_grad_enabled(needs_grad):
                return super().__call__(*inputs, **kwargs)
        with torch.set_grad_enabled(needs_grad), torch.autocast(self.device.type, dtype=self.autocast_dtype):
            return _to_float32(super().__call__(*inputs, **kwargs))  # callers keep computing in fp32

    def extra_repr(self) -> str:
        return f"name={self.name}, weights={self.weights}, params={self.num_parameters():,}"


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class ExternalModel(nn.Module):
    """Parameter-free nn.Module around a model that is not a torch network (dlib), loaded by `_load` from
    `model_file`: always eval, shared by reference, pickled as its file path."""

    def __init__(self, model_file: str | None, name: str, weights: str | None = None) -> None:
        super().__init__()
        self.name, self.model_file = name, model_file
        self.weights = str(weights if weights is not None else model_file)  # where it came from, recorded
        self.model = self._load(model_file)
        self.training = False

    @staticmethod
    def _load(path: str | None) -> Any:
        raise NotImplementedError

    def train(self, mode: bool = True) -> ExternalModel:
        return super().train(False)

    def __deepcopy__(self, memo: dict) -> ExternalModel:
        return self

    def __getstate__(self) -> dict:
        return {k: v for k, v in super().__getstate__().items() if k != "model"}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.model = self._load(self.model_file)

    def extra_repr(self) -> str:
        return f"name={self.name}, weights={self.weights}"


def weights_sha256(expert: nn.Module) -> str:
    """sha256 of the weights an expert computes with: its network's tensors (names, dtypes, shapes, values) or,
    for a model outside torch, its file. It names the network exactly whatever the weights came from (an
    official file, a re-save, seeded random weights); computed once per expert, which is frozen."""
    if "_weights_sha256" not in expert.__dict__:
        digest = hashlib.sha256()
        for name, tensor in sorted(getattr(expert, "net", expert).state_dict().items()):
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        model_file = getattr(expert, "model_file", None)
        if model_file and Path(model_file).is_file():
            digest.update(Path(model_file).read_bytes())
        expert.__dict__["_weights_sha256"] = digest.hexdigest()
    return expert.__dict__["_weights_sha256"]


class Experts(nn.Module):
    """The run's set of experts by role (identity, perceptual, ...), built once and handed to everyone.

    Roles hold `FrozenExpert`s, or modules without torch weights (dlib, PnP) that carry `name` and `weights`.
    """

    def __init__(self, **experts: nn.Module | None) -> None:
        super().__init__()
        for role, expert in experts.items():
            if expert is not None:
                self.add_module(role, expert)
        self.input_template: str | None = None  # None: inputs are canonical crops
        self._template_hooks: list[Any] = []

    def roles(self) -> list[str]:
        """The roles this set provides, in the order they were given."""
        return list(self._modules)

    def __contains__(self, role: object) -> bool:
        return isinstance(role, str) and role in self._modules

    def get(self, role: str, default: nn.Module | None = None) -> nn.Module | None:
        """The expert of `role`, or `default` when the set has none."""
        return self._modules.get(role, default)

    def items(self) -> list[tuple[str, nn.Module]]:
        return list(self._modules.items())

    def set_input_template(self, template: str | None, unconverted: tuple[str, ...] = ()) -> None:
        """Let every expert take crops of another alignment template (e.g. `ffhq_256` training crops): image
        arguments (B x 3 x S x S) are re-cropped to the canonical template at the same size in one batched warp
        before each call, and experts whose outputs are maps over the input (`spatial_output`, the parser)
        have them warped back. Each expert then cuts its own box as usual. None / canonical: no conversion.
        `unconverted`: roles that take the crops as they are (e.g. Fast Face-swap's VGG, whose losses are
        defined on its own aligned crops)."""
        for handle in self._template_hooks:
            handle.remove()
        self._template_hooks = []
        self.input_template = None if template in (None, CANONICAL) else get_template(template).name
        if self.input_template is None:
            return
        source = self.input_template

        def is_crop(x: Any) -> bool:
            return isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] == 3 and x.shape[2] == x.shape[3]

        def inputs_to_canonical(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            def convert(x: Any) -> Any:
                return convert_crops(x, get_template(source, x.shape[-1]), get_template(CANONICAL, x.shape[-1])) \
                    if is_crop(x) else x

            return tuple(convert(a) for a in args), {k: convert(v) for k, v in kwargs.items()}

        def outputs_from_canonical(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> Any:
            size = output.shape[-1]
            return convert_crops(output, get_template(CANONICAL, size), get_template(source, size),
                                 padding_mode="border")

        for role, expert in self._modules.items():
            if role in unconverted:
                continue
            self._template_hooks.append(expert.register_forward_pre_hook(inputs_to_canonical, with_kwargs=True))
            if getattr(expert, "spatial_output", False):
                self._template_hooks.append(expert.register_forward_hook(outputs_from_canonical, with_kwargs=True))

    def set_precision(self, precision: str = "fp32") -> None:
        """Run every torch expert under autocast at `precision` ("bf16" / "fp16"; "fp32": full precision).
        Their outputs come back as fp32, and gradients still flow through them where a loss needs it."""
        if precision not in PRECISIONS:
            raise ValueError(f"experts precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        for expert in self._modules.values():
            if isinstance(expert, FrozenExpert):
                expert.autocast_dtype = PRECISIONS[precision]

    def require(self, *roles: str) -> None:
        missing = [r for r in roles if r not in self]
        if missing:
            raise ValueError(
                f"this model needs experts {missing}, but the experts config provides {self.roles()}"
            )

    def describe(self) -> dict[str, dict[str, Any]]:
        return {
            role: {"name": getattr(e, "name", type(e).__name__), "weights": str(getattr(e, "weights", "")),
                   "sha256": weights_sha256(e), "params": sum(p.numel() for p in getattr(e, "net", e).parameters())}
            for role, e in self._modules.items()
        }
