"""Tests for the procedural synthetic face generator (swaplab.data.synthetic_faces)."""

from __future__ import annotations

import pytest
import torch

from swaplab.data.synthetic import SyntheticSwapDataset
from swaplab.data.synthetic_faces import (
    EXPRESSION_DIM,
    FACTORS,
    MASK_CLASSES,
    N_LANDMARKS,
    SHAPE_DIM,
    SyntheticFaces,
    _mix,
    hash_uniform,
    swap_factors,
)

RIGHT_EYE, LEFT_EYE = list(range(36, 42)), list(range(42, 48))


def _ids(*v: int) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.long)


def _frontal(gen: SyntheticFaces, n: int, yaw: float = 0.0, seed_index: int = 0) -> dict[str, torch.Tensor]:
    """n identities with the head pose overridden (default: frontal)."""
    p = gen.sample(torch.arange(n), torch.full((n,), seed_index))
    p["pose"] = torch.zeros(n, 3)
    p["pose"][:, 0] = yaw
    return gen.render(p)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def gen64() -> SyntheticFaces:
    return SyntheticFaces(resolution=64, seed=7)


@pytest.fixture(scope="module")
def batch64(gen64: SyntheticFaces) -> dict[str, torch.Tensor]:
    return gen64(torch.arange(24) % 8, torch.arange(24))


def test_hash_matches_reference_splitmix64() -> None:
    """int64 torch arithmetic wraps like uint64 and the logical shifts are masked correctly."""
    def ref(x: int) -> int:
        m = (1 << 64) - 1
        z = (x + 0x9E3779B97F4A7C15) & m
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        return z ^ (z >> 31)

    xs = [0, 1, 12345, -1, -(1 << 63), (1 << 63) - 1, 0x0123456789ABCDEF]
    got = _mix(torch.tensor(xs, dtype=torch.long)).tolist()
    assert [g & ((1 << 64) - 1) for g in got] == [ref(x & ((1 << 64) - 1)) for x in xs]
    u = hash_uniform(0, [torch.arange(4096), 1], 8, torch.arange(4096))
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.02


@pytest.mark.parametrize("res", [32, 64, 256])
def test_output_shapes_dtypes_ranges(res: int) -> None:
    b = 2 if res == 256 else 5
    out = SyntheticFaces(resolution=res)(torch.arange(b), torch.arange(b))
    assert out["image"].shape == (b, 3, res, res) and out["image"].dtype == torch.float32
    assert out["image"].min() >= -1 and out["image"].max() <= 1 and out["image"].std() > 0.1
    assert out["mask"].shape == (b, res, res) and out["mask"].dtype == torch.int64
    assert set(out["mask"].unique().tolist()) <= set(range(len(MASK_CLASSES)))
    lm = out["landmarks"]
    assert lm.shape == (b, N_LANDMARKS, 2) and lm.dtype == torch.float32 and torch.isfinite(lm).all()
    assert (lm > 0).all() and (lm < res - 1).all()
    assert out["identity"].dtype == torch.long and out["shape"].shape == (b, SHAPE_DIM)
    assert out["expression"].shape == (b, EXPRESSION_DIM) and out["pose"].shape == (b, 3)
    assert out["appearance"].dim() == 2 and out["background"].dim() == 2
    assert torch.allclose(out["light"].norm(dim=1), torch.ones(b), atol=1e-5)
    assert (out["shape"].abs() <= 1).all()


@pytest.mark.parametrize("ss", [1, 3])
def test_supersampling_variants_agree(ss: int) -> None:
    """Other supersampling factors give the same picture up to antialiasing."""
    ids = _ids(0, 1, 2)
    ref, out = SyntheticFaces(48, supersample=2)(ids, ids), SyntheticFaces(48, supersample=ss)(ids, ids)
    assert out["image"].shape == ref["image"].shape
    assert (out["image"] - ref["image"]).abs().mean() < 0.02
    assert (out["mask"] != ref["mask"]).float().mean() < 0.03
    assert torch.equal(out["landmarks"], ref["landmarks"])


def test_landmarks_scale_with_resolution() -> None:
    """Same sample at 64 and 256 px: landmarks agree up to the pixel-centre convention."""
    ids = _ids(3, 4)
    lo, hi = SyntheticFaces(64, seed=2)(ids, ids), SyntheticFaces(256, seed=2)(ids, ids)
    assert torch.allclose((hi["landmarks"] + 0.5) / 4, lo["landmarks"] + 0.5, atol=1e-3)


def test_determinism_and_batch_independence(gen64: SyntheticFaces) -> None:
    ids, idx = _ids(5, 9, 3, 11), _ids(2, 0, 7, 1)
    a, b = gen64(ids, idx), SyntheticFaces(resolution=64, seed=7)(ids, idx)
    for k in ("image", "mask", "landmarks", "pose", "shape", "appearance"):
        assert torch.equal(a[k], b[k]), k
    alone = gen64(_ids(9), _ids(0))
    perm = torch.tensor([3, 1, 0, 2])
    shuffled = gen64(ids[perm], idx[perm])
    for k in ("image", "mask", "landmarks", "background", "light"):  # bitwise, whatever the batch
        assert torch.equal(alone[k][0], a[k][1]) and torch.equal(shuffled[k][1], a[k][1]), k
    other_seed = SyntheticFaces(resolution=64, seed=8)(ids, idx)
    assert not torch.equal(other_seed["shape"], a["shape"])
    assert (other_seed["image"] - a["image"]).abs().mean() > 0.05


def test_identity_vs_image_level_parameters(gen64: SyntheticFaces) -> None:
    same = gen64.sample(torch.full((6,), 4), torch.arange(6))
    assert torch.equal(same["shape"], same["shape"][:1].expand(6, -1))
    assert torch.equal(same["appearance"], same["appearance"][:1].expand(6, -1))
    for k in ("pose", "expression", "light", "background"):
        assert (same[k] - same[k][:1]).abs().amax(1)[1:].min() > 1e-3, k  # varies with image_index
    diff = gen64.sample(torch.arange(50), torch.zeros(50, dtype=torch.long))
    d_shape = torch.cdist(diff["shape"], diff["shape"]) + torch.eye(50) * 10
    d_app = torch.cdist(diff["appearance"], diff["appearance"]) + torch.eye(50) * 10
    assert d_shape.min() > 0.3 and d_app.min() > 0.1


def test_identity_appearance_is_stable_across_images(batch64: dict[str, torch.Tensor]) -> None:
    """Mean face-skin colour is closer within an identity than between identities."""
    m = (batch64["mask"] == 1).unsqueeze(1).float()
    hair = (batch64["mask"] == 2).unsqueeze(1).float()
    skin = (batch64["image"] * m).sum((2, 3)) / m.sum((2, 3))
    hcol = (batch64["image"] * hair).sum((2, 3)) / hair.sum((2, 3)).clamp_min(1)
    feat = torch.cat([skin, hcol], 1)
    ident = batch64["identity"]
    dist = torch.cdist(feat, feat)
    same = ident[:, None] == ident[None]
    off = ~torch.eye(len(ident), dtype=torch.bool)
    assert dist[same & off].mean() < 0.5 * dist[~same].mean()


def test_pose_within_configured_ranges() -> None:
    gen = SyntheticFaces(resolution=32, max_yaw=12.0, max_pitch=5.0, max_roll=3.0)
    p = gen.sample(torch.arange(400) % 20, torch.arange(400))
    for i, lim in enumerate((12.0, 5.0, 3.0)):
        assert p["pose"][:, i].abs().max() <= lim and p["pose"][:, i].std() > lim / 6
    assert SyntheticFaces(expression_scale=0.0).sample(_ids(1, 2), _ids(3, 4))["expression"].abs().max() == 0


def test_landmarks_lie_on_the_rendered_face(gen64: SyntheticFaces) -> None:
    n = 16
    for yaw in (0.0, 5.0, -5.0):
        out = _frontal(gen64, n, yaw)
        xy = out["landmarks"].round().long()
        assert (xy >= 0).all() and (xy < 64).all()
        b = torch.arange(n)[:, None]
        cls = out["mask"][b, xy[..., 1], xy[..., 0]]
        assert (cls != 0).all(), f"landmark off the head at yaw {yaw}"
        assert (cls[:, RIGHT_EYE + LEFT_EYE] == 1).all(), f"eye landmark not on face skin at yaw {yaw}"


def test_landmarks_near_head_at_any_pose(batch64: dict[str, torch.Tensor]) -> None:
    """At random poses (up to 40 deg yaw) landmarks stay on or within a pixel of the rendered head."""
    head = torch.nn.functional.max_pool2d((batch64["mask"] != 0).float()[:, None], 3, 1, 1)[:, 0]
    xy = batch64["landmarks"].round().long().clamp(0, 63)
    b = torch.arange(len(xy))[:, None]
    assert (head[b, xy[..., 1], xy[..., 0]] == 1).all()


def test_landmarks_follow_expression(gen64: SyntheticFaces) -> None:
    p = gen64.sample(torch.arange(4), torch.zeros(4, dtype=torch.long))
    p["pose"].zero_()
    p["expression"].zero_()
    closed = gen64.render(p)["landmarks"]
    p["expression"][:, 0] = 1.0  # mouth open
    p["expression"][:, 3] = 1.0  # eyes closed
    moved = gen64.render(p)["landmarks"]
    gap = lambda lm, a, b: (lm[:, b, 1] - lm[:, a, 1])  # noqa: E731
    assert (gap(closed, 62, 66).abs() < 0.2).all() and (gap(moved, 62, 66) > 2.0).all()
    assert (gap(closed, 37, 41) > 0.8).all() and (gap(moved, 37, 41).abs() < 0.3).all()


def test_yaw_sign_convention(gen64: SyntheticFaces) -> None:
    """Positive yaw turns the face towards image right: nose tip (30) right of the jaw midpoint."""
    for yaw, sign in ((25.0, 1), (-25.0, -1)):
        lm = _frontal(gen64, 6, yaw)["landmarks"]
        mid = 0.5 * (lm[:, 0, 0] + lm[:, 16, 0])
        assert (sign * (lm[:, 30, 0] - mid) > 1.0).all()
    lm = _frontal(gen64, 6, 0.0)["landmarks"]
    assert ((lm[:, 30, 0] - 0.5 * (lm[:, 0, 0] + lm[:, 16, 0])).abs() < 0.5).all()
    assert (lm[:, 36, 0] < lm[:, 45, 0]).all() and (lm[:, 48, 0] < lm[:, 54, 0]).all()  # iBUG left/right


def test_mask_has_all_classes_and_face_is_centred(batch64: dict[str, torch.Tensor]) -> None:
    mask = batch64["mask"]
    has_all = torch.stack([(mask == c).flatten(1).any(1) for c in range(3)], 1).all(1)
    assert has_all.float().mean() >= 0.75
    head = (mask != 0).float()
    cols = head.amax(1)  # (B, W) columns touched by the head
    width = cols.sum(1) / 64
    assert (width > 0.5).all() and (width < 0.95).all()
    xs = torch.arange(64.0)
    cx = (head.sum(1) * xs).sum(1) / head.sum((1, 2))
    assert ((cx - 31.5).abs() < 8).all()


def test_light_direction_changes_shading(gen64: SyntheticFaces) -> None:
    p = gen64.sample(_ids(2, 2), _ids(0, 0))
    p["pose"].zero_()
    p["light"] = torch.tensor([[-0.8, 0.0, 0.6], [0.8, 0.0, 0.6]])
    out = gen64.render(p)
    assert (out["image"][0] - out["image"][1]).abs().mean() > 0.01
    face = (out["mask"] == 1).float()
    half = torch.zeros(64, 64)
    half[:, :32] = 1
    lum = out["image"].mean(1)
    left = (lum * face * half).sum((1, 2)) / (face * half).sum((1, 2))
    right = (lum * face * (1 - half)).sum((1, 2)) / (face * (1 - half)).sum((1, 2))
    assert left[0] > right[0] + 0.05 and right[1] > left[1] + 0.05  # lit side is brighter


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    gen = SyntheticFaces(resolution=64, seed=3)
    cpu = gen(torch.arange(4), torch.arange(4))
    gpu = gen(torch.arange(4, device="cuda"), torch.arange(4, device="cuda"))
    assert gpu["image"].device.type == "cuda"
    torch.testing.assert_close(gpu["landmarks"].cpu(), cpu["landmarks"], atol=1e-3, rtol=0)
    assert (gpu["image"].cpu() - cpu["image"]).abs().mean() < 1e-3
    assert (gpu["mask"].cpu() != cpu["mask"]).float().mean() < 0.01


# --- true swaps -------------------------------------------------------------------------------------------------

def test_true_swap_of_one_identity_is_the_target_bit_for_bit(gen64: SyntheticFaces) -> None:
    """Source and target are different images of the same people: the true swap renders the target exactly."""
    ids = _ids(3, 3, 11, 40)
    source, target = gen64.sample(ids, _ids(0, 1, 2, 3)), gen64.sample(ids, _ids(5, 6, 7, 8))
    truth, rendered_target = gen64.render(swap_factors(source, target)), gen64.render(target)
    for key in ("image", "mask", "landmarks"):
        assert torch.equal(truth[key], rendered_target[key]), key


def test_true_swap_takes_identity_factors_from_the_source_and_the_rest_from_the_target(gen64) -> None:
    source, target = gen64.sample(_ids(1, 2), _ids(0, 0)), gen64.sample(_ids(7, 8), _ids(3, 4))
    swap = swap_factors(source, target)
    assert torch.equal(swap["shape"], source["shape"])
    for columns, origin in (([0, 1, 2, 6, 7, 8, 16, 17, 18, 19], source),  # skin, iris, brows, lips, eye tilt
                            ([3, 4, 5, 12, 13, 14, 15, 9, 10, 11], target)):  # hair, clothing
        assert torch.equal(swap["appearance"][:, columns], origin["appearance"][:, columns])
    for key in ("pose", "expression", "gaze", "light", "light_ambient", "light_tint", "background",
                "translation", "scale"):
        assert torch.equal(swap[key], target[key]), key
    # nothing from the source: the target; everything from the source: the source image
    assert torch.equal(gen64.render(swap_factors(source, target, ()))["image"], gen64.render(target)["image"])
    everything = swap_factors(source, target, list(FACTORS))
    assert torch.equal(gen64.render(everything)["image"], gen64.render(source)["image"])
    with pytest.raises(ValueError, match="unknown face factors"):
        swap_factors(source, target, ["nose_ring"])


def test_dataset_true_swaps_match_the_renderer_and_keep_the_target_pose() -> None:
    data = SyntheticSwapDataset(resolution=32, num_identities=20, images_per_identity=3, same_identity_rate=0.5,
                                same_image_rate=0.5, true_swap=True)
    batch = data.__getitems__(list(range(24)))
    same, other = batch["same"], ~batch["same"]
    assert same.any() and other.any() and (same & ~batch["same_image"]).any()
    for key in ("", "_mask", "_landmarks"):
        assert torch.equal(batch[f"true_swap{key}"][same], batch[f"target{key}"][same])
    faces, p = data.faces, data.pairs(torch.arange(24))
    expected = faces.render(swap_factors(faces.sample(p["source_id"], p["source_img"]),
                                         faces.sample(p["target_id"], p["target_img"])))
    assert torch.equal(batch["true_swap"][other], expected["image"][other])
    assert torch.equal(batch["true_swap_landmarks"][other], expected["landmarks"][other])
    # the swap moved the face: it is neither image
    assert (batch["true_swap"][other] - batch["target"][other]).abs().amax(dim=(1, 2, 3)).min() > 0.1
    assert (batch["true_swap"][other] - batch["source"][other]).abs().amax(dim=(1, 2, 3)).min() > 0.1
