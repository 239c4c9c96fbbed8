"""Procedural synthetic faces: deterministic by seed, batched, any resolution, with ground truth per image.

Every number derives from a counter-based integer hash of ``(seed, identity, image_index, stream)`` (no
global RNG), so a sample is bitwise identical whatever batch it is rendered in. The head is a union of
ellipsoids (cranium, jaw, tilted nose, ears), a hair shell and, for long hair, a hair curtain behind the
head; it is rotated and ray cast orthographically on a supersampled grid (ambient + Lambert + specular).
Eyes, brows, nostrils and lips are painted at output resolution (analytic antialiasing) in the head's
frontal texture coordinates ``(u, v) = (x, y)`` of the surface point; the 68 landmarks are the same texture
points lifted onto the surface and projected with the same transform, so they sit on the drawn features.

Frames: head and world ``x`` right, ``y`` up, ``z`` towards the camera; the image spans ``[-1, 1]``.
Landmarks are pixel ``(x, y)`` with pixel centres at integers: ``x = (X + 1) / 2 * res - 0.5``.
Mask: 0 background (also neck and shoulders), 1 face skin (incl. ears), 2 hair.

``shape`` (SHAPE_DIM=10, identity-level, uniform in [-1, 1]; head units, image half-width = 1 / (1.3 scale)):
  0 head_width  cranium half-width 0.43 (1 + 0.08 s)   5 eye_size    eye half-width 0.08 (1 + 0.1 s), h. 15%
  1 head_height cranium half-height 0.55 (1 + 0.06 s)  6 eye_height  eye line v = 0.02 + 0.02 s
  2 jaw_width   jaw / cranium width 0.83 + 0.07 s      7 nose_length 0.19 (1 + 0.12 s)
  3 chin_length jaw half-height 0.42 (1 + 0.08 s)      8 nose_width  0.055 (1 + 0.2 s)
  4 eye_spacing eye half-distance 0.16 (1 + 0.08 s)    9 mouth_width lip half-width 0.11 (1 + 0.12 s)
``appearance`` (APPEARANCE_DIM=20, identity-level): 0-2 skin RGB, 3-5 hair RGB, 6-8 iris RGB, 9-11 clothing
  RGB (in [0, 1]); 12 hairline [0, 1] (1 = bald), 13 hair volume, 14 hair length (> 0.55: long-hair
  curtain), 15 fringe side [-1, 1] (|.| > 0.4: fringe), 16 brow thickness, 17 lip thickness, 18 lip redness
  (13-18 in [0, 1]), 19 eye (canthal) tilt [-1, 1].
``expression`` (EXPRESSION_DIM=4, image-level, times ``expression_scale``): 0 mouth_open [0, 1],
  1 smile [-0.4, 1] (< 0 frown), 2 brow_raise [-1, 1], 3 eye_close [0, 1] (1 = closed).
``pose`` (yaw, pitch, roll) degrees, triangular in +-max: positive yaw turns the face towards image right (the
  nose tip, landmark 30, moves right of the jaw midpoint), positive pitch tilts the face up, positive roll
  turns the head counter-clockwise in the image. ``light`` (B, 3) unit vector towards the light (world);
  ``light_ambient`` (B,) in [0.3, 0.55]; ``light_tint`` (B, 3) in [0.92, 1.08]. ``background`` (B, 26):
  gradient colours c0, c1 (6), gradient direction (2), 3 blobs: centres xy (6), radii (3), RGB (9).
  ``translation`` (B, 2) world units in +-0.05, ``scale`` (B,) in [0.94, 1.06], ``gaze`` (B, 2) in [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

N_LANDMARKS = 68
SHAPE_DIM = 10
EXPRESSION_DIM = 4
APPEARANCE_DIM = 20
BACKGROUND_DIM = 26
MASK_CLASSES = ("background", "face", "hair")
_MISS, _Z0, _K0, _NOSE_TILT = 1e4, 5.0, 1.3, 0.5  # miss offset, ray origin z, head->world, nose tilt (rad)
_NOSE_CS = (math.cos(_NOSE_TILT), math.sin(_NOSE_TILT))
_GOLD, _C1, _C2 = (v - (1 << 64) for v in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))
Tensor = torch.Tensor


def _srl(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(z: Tensor) -> Tensor:
    """splitmix64 step on int64 tensors (two's-complement wrapping arithmetic)."""
    z = z + _GOLD
    z = (z ^ _srl(z, 30)) * _C1
    z = (z ^ _srl(z, 27)) * _C2
    return z ^ _srl(z, 31)


def hash_uniform(seed: int, keys: list[Tensor | int], n: int, ref: Tensor) -> Tensor:
    """(B, n) uniforms in [0, 1) from hash(seed, *keys, j); 24-bit values, exact in float32."""
    h = _mix(torch.full_like(ref, (seed + (1 << 63)) % (1 << 64) - (1 << 63)))
    for k in keys:
        h = _mix(h ^ k)
    return _srl(_mix(h[:, None] ^ torch.arange(n, device=ref.device)), 40).to(torch.float32) * 2.0**-24


def _mat(rows: list[list[Tensor]]) -> Tensor:
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """Batched 3x3 products in a fixed summation order (bitwise independent of the batch size)."""
    return a[..., :, 0:1] * b[..., 0:1, :] + a[..., :, 1:2] * b[..., 1:2, :] + a[..., :, 2:3] * b[..., 2:3, :]


def _mv(a: Tensor, v: Tensor) -> Tensor:
    return a[..., 0] * v[..., 0:1] + a[..., 1] * v[..., 1:2] + a[..., 2] * v[..., 2:3]


def _dot(p: Tensor, q: Tensor) -> Tensor:
    return p[..., 0] * q[..., 0] + p[..., 1] * q[..., 1] + p[..., 2] * q[..., 2]


def _rotation(pose: Tensor) -> Tensor:
    """(B, 3, 3) head-to-world rotation Rz(roll) Rx(pitch) Ry(yaw) from degrees."""
    rad, z = torch.deg2rad(pose), pose[:, 0] * 0
    (cy, cp, cr), (sy, sp, sr), o = rad.cos().unbind(-1), rad.sin().unbind(-1), z + 1
    ry, rx = _mat([[cy, z, sy], [z, o, z], [-sy, z, cy]]), _mat([[o, z, z], [z, cp, sp], [z, -sp, cp]])
    return _mm(_mm(_mat([[cr, -sr, z], [sr, cr, z], [z, z, o]]), rx), ry)


def _ellipsoid(c: Tensor, r: Tensor, tilt: float = 0.0) -> tuple[Tensor, Tensor]:
    """(A, c) with q = A (p - c) on the unit sphere; tilt (rad, about x) leans the top backwards."""
    a, co, si = torch.diag_embed(1.0 / r), math.cos(tilt), math.sin(tilt)
    return (_mm(a, a.new_tensor([[1.0, 0, 0], [0, co, -si], [0, si, co]])) if tilt else a), c


def _step(x: Tensor) -> Tensor:
    """Float step, 1 where x > ~0 (bool tensors, torch.where and avg_pool2d are slow on CPU)."""
    return (x * 1e7).clamp_(0, 1)


def _quadric(frame: tuple[Tensor, ...], ell: tuple[Tensor, Tensor], nd: int) -> tuple[list[Tensor], ...]:
    """Per-sample coefficients of |q(t)|^2 = 1 along rays e0 + x e1 + y e2 + t d, polynomial in (x, y)."""
    al, be, ga, de = (_mv(ell[0], v) for v in (frame[1], frame[2], frame[0] - ell[1], frame[3]))
    co = [_dot(de, de), _dot(al, de), _dot(be, de), _dot(ga, de), _dot(al, al), 2 * _dot(al, ga),
          _dot(ga, ga) - 1, _dot(be, be), 2 * _dot(be, ga), 2 * _dot(al, be)]
    return [v.view((-1,) + (1,) * nd) for v in co], [v.view(v.shape + (1,) * nd) for v in (al, be, ga, de)]


def _hit(co: list[Tensor], x: Tensor, y: Tensor, xy: Tensor) -> Tensor:
    """Near ray/ellipsoid hit distance t (plus _MISS where the ray misses)."""
    a, bx, by, b0, cxx, cx, c0, cyy, cy, cxy = co
    b = (x * bx + b0) + y * by
    disc = b * b - a * (((x * cxx + cx) * x + c0) + (y * cyy + cy) * y + xy * cxy)
    t = disc.clamp_min(1e-12).sqrt_().add_(b).div_(-a)  # (sqrt of exact zeros is slow on CPU)
    return t.add_((disc * -1e7).clamp_(0, 1), alpha=_MISS)


def _views(g: dict[str, Tensor], nd: int) -> dict[str, Tensor]:
    """Entries of g with nd trailing singleton dims: (B,) -> (B, 1, ..), (B, k) -> (B, k, 1, ..)."""
    return {k: v.view((v.shape if v.dim() == 2 else (-1,)) + (1,) * nd) for k, v in g.items()}


def _pool(xs: list[Tensor], ss: int) -> list[Tensor]:
    """ss x ss box average of (B, H, W) tensors (pairwise sums for powers of two; avg_pool2d is slow)."""
    if ss & (ss - 1):
        return list(F.avg_pool2d(torch.stack(xs, 1), ss).unbind(1))
    for _ in range(ss.bit_length() - 1):
        xs = [x[..., 0::2] + x[..., 1::2] for x in xs]
        xs = [(x[..., 0::2, :] + x[..., 1::2, :]).mul_(0.25) for x in xs]
    return xs


def _eye_lids(g: dict[str, Tensor], s: Tensor) -> tuple[Tensor, Tensor]:
    """Upper / lower lid v at mirrored eye coordinate s (+1 outer corner, -1 inner corner)."""
    sw = (1 - s * s).clamp_min(1e-12).sqrt()
    bot = g["ye"] + g["tilt"] * s - g["eh_l"] * sw
    return bot + (g["eh_u"] + g["eh_l"]) * (1 - g["close"]) * sw, bot


def _brow(g: dict[str, Tensor], s: Tensor) -> tuple[Tensor, Tensor]:
    """Brow centre line v and thickness at mirrored brow coordinate s (+1 outer end)."""
    return g["by"] + 0.016 * (1 - s * s) - 0.006 * s, g["bt"] * (1 - 0.35 * s)


def _lips(g: dict[str, Tensor], s: Tensor) -> tuple[Tensor, ...]:
    """Outer-upper, inner-upper, inner-lower, outer-lower lip v at mouth coordinate s = u / mw."""
    sw = (1 - s * s).clamp_min(1e-12).sqrt()
    m, half, bow = g["my"] + g["smile"] * s * s, 0.5 * g["gap"] * sw, (1 - s * s * 11).clamp_min(0)
    return m + half + g["tu"] * sw * (1 - 0.35 * bow * bow), m + half, m - half, m - half - g["tl"] * sw


def _hair(g: dict[str, Tensor], qx: Tensor, qy: Tensor, qz: Tensor, inv_pix: Tensor | None) -> Tensor:
    """Hair coverage at unit-sphere cranium coordinates q: above the hairline or at the back of the head."""
    bump, side = (1 - ((qx - g["fringe_x"]) * 2.2) ** 2).clamp_min_(0), (qx.abs() - 0.5).clamp_min_(0)
    d = torch.maximum(qy - g["hl0"] + 0.15 * qx * qx + 1.2 * side * side + g["fringe_amp"] * bump * bump,
                      torch.minimum(-0.2 - qz, qy + 0.1 + 0.9 * g["hlen"]))
    return _step(d) if inv_pix is None else (d * 0.3 * inv_pix + 0.5).clamp_(0, 1)


# Factors of a rendered face by name: (parameter key, indices in its last dimension; None = all of it). A true
# swap renders the source's `identity_factors` with every other factor from the target (`swap_factors`).
FACTORS: dict[str, tuple[tuple[str, tuple[int, ...] | None], ...]] = {
    "face_shape": (("shape", None),),
    "skin": (("appearance", (0, 1, 2)),),
    "iris": (("appearance", (6, 7, 8)),),
    "brows": (("appearance", (16,)),),
    "lips": (("appearance", (17, 18)),),
    "eye_tilt": (("appearance", (19,)),),
    "hair": (("appearance", (3, 4, 5, 12, 13, 14, 15)),),
    "clothing": (("appearance", (9, 10, 11)),),
    "pose": (("pose", None),),
    "expression": (("expression", None),),
    "gaze": (("gaze", None),),
    "light": (("light", None), ("light_ambient", None), ("light_tint", None)),
    "background": (("background", None),),
    "framing": (("translation", None), ("scale", None)),
}
# What makes the person (FaceShifter / HifiFace: hair and clothing follow the target, as in their results).
IDENTITY_FACTORS = ("face_shape", "skin", "iris", "brows", "lips", "eye_tilt")


def check_factors(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in FACTORS]
    if unknown:
        raise ValueError(f"unknown face factors {unknown}; known: {list(FACTORS)}")
    return tuple(names)


def swap_factors(source: dict[str, Tensor], target: dict[str, Tensor],
                 from_source: tuple[str, ...] | list[str] = IDENTITY_FACTORS) -> dict[str, Tensor]:
    """Parameters of the true swap: the target's, with the factors `from_source` taken from the source (both
    dicts from `SyntheticFaces.sample`, same batch size). Rendering them gives what a perfect swap of the
    source's identity onto the target image looks like; when source and target share the identity, the
    result equals the target's parameters exactly."""
    out = {k: v.clone() for k, v in target.items()}
    for name in check_factors(from_source):
        for key, columns in FACTORS[name]:
            if columns is None:
                out[key] = source[key].clone()
            else:
                out[key][:, list(columns)] = source[key][:, list(columns)]
    out["identity"] = source["identity"].clone()
    return out


class SyntheticFaces:
    """Procedural face renderer; same (seed, identity, image_index) -> same image, on any machine."""

    band_elements = 1 << 19  # CPU: row bands of ~this many supersampled pixels (whole batch) stay in cache

    def __init__(self, resolution: int = 64, seed: int = 0, supersample: int = 2, max_yaw: float = 40.0,
                 max_pitch: float = 20.0, max_roll: float = 15.0, expression_scale: float = 1.0) -> None:
        self.resolution, self.seed, self.supersample = int(resolution), int(seed), max(1, int(supersample))
        self.max_pose = (float(max_yaw), float(max_pitch), float(max_roll))
        self.expression_scale = float(expression_scale)

    def __call__(self, identity: Tensor, image_index: Tensor) -> dict[str, Tensor]:
        return self.render(self.sample(identity, image_index))

    def sample(self, identity: Tensor, image_index: Tensor) -> dict[str, Tensor]:
        """Identity-level params from (seed, identity), image-level ones also from image_index."""
        identity = torch.as_tensor(identity).long().reshape(-1)
        image_index = torch.as_tensor(image_index).long().reshape(-1).to(identity.device)
        ui = hash_uniform(self.seed, [identity, 1], 30, identity)
        um = hash_uniform(self.seed, [identity, image_index, 2], 48, identity)
        lerp, tone, new = torch.lerp, ui[:, 10:11], ui.new_tensor
        light, mid, dark = new([0.97, 0.80, 0.69]), new([0.80, 0.58, 0.44]), new([0.38, 0.25, 0.17])
        skin = torch.where(tone < 0.5, lerp(light, mid, 2 * tone), lerp(mid, dark, 2 * tone - 1))
        skin = skin * (1 + 0.06 * (ui[:, 11:12] - 0.5) * new([1.0, 0.0, -1.0]))
        m = ui[:, 12:13] ** 0.6
        hair = lerp(new([0.82, 0.66, 0.42]), new([0.07, 0.05, 0.04]), m)
        hair = lerp(hair, new([0.58, 0.22, 0.09]), 0.8 * ui[:, 13:14] * (1 - m) * (ui[:, 13:14] > 0.6))
        hair = lerp(hair, new([0.72, 0.72, 0.72]), (ui[:, 14:15] > 0.92).float() * 0.85)
        pal = new([[0.33, 0.18, 0.08], [0.45, 0.36, 0.16], [0.28, 0.45, 0.30], [0.30, 0.48, 0.70]])
        iris = pal[(ui[:, 15] * 4).long().clamp(0, 3)] * (0.75 + 0.5 * ui[:, 16:17])
        style = ui[:, 20:28].clone()
        style[:, 0] = torch.where(ui[:, 28] > 0.97, 1.0, 0.8 * style[:, 0])  # hairline; 3% bald
        style[:, 3], style[:, 7] = style[:, 3] * 2 - 1, style[:, 7] * 2 - 1  # fringe side, eye tilt
        appearance = torch.cat([skin.clamp(0, 1), hair, iris.clamp(0, 1), 0.1 + 0.8 * ui[:, 17:20], style], 1)
        pose = (um[:, 0:3] + um[:, 3:6] - 1) * new(self.max_pose)  # triangular: favours frontal poses
        expression = torch.stack([um[:, 6] ** 2, 1.4 * um[:, 7] - 0.4, 2 * um[:, 8] - 1,
                                  (1.5 * um[:, 9] - 0.5).clamp(0, 1) ** 2], 1) * self.expression_scale
        az, el, ang = (um[:, 10] * 2 - 1) * 1.1, (um[:, 11] * 2 - 1) * 0.7 + 0.2, um[:, 18] * 2 * math.pi
        background = torch.cat([0.15 + 0.7 * um[:, 12:18], torch.stack([ang.cos(), ang.sin()], 1),
                                um[:, 19:25] * 2 - 1, 0.3 + 0.5 * um[:, 25:28], 0.1 + 0.8 * um[:, 28:37]], 1)
        return {"identity": identity, "image_index": image_index, "shape": ui[:, :SHAPE_DIM] * 2 - 1,
                "appearance": appearance, "pose": pose, "expression": expression,
                "light": torch.stack([az.sin() * el.cos(), el.sin(), az.cos() * el.cos()], 1),
                "light_ambient": 0.3 + 0.25 * um[:, 37], "light_tint": 1 + 0.16 * (um[:, 38:41] - 0.5),
                "background": background, "translation": (um[:, 41:43] * 2 - 1) * 0.05,
                "scale": 0.94 + 0.12 * um[:, 43], "gaze": um[:, 44:46] * 2 - 1}

    @staticmethod
    def _geometry(p: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-sample geometry in head units from shape / appearance / expression / jitter."""
        s, ap, ex, tr = p["shape"].unbind(-1), p["appearance"], p["expression"], p["translation"]
        z = torch.zeros_like(s[0])
        a, b, c = 0.43 * (1 + 0.08 * s[0]), 0.55 * (1 + 0.06 * s[1]), 0.5 * (1 + 0.04 * s[0])
        g = {"cr_c": torch.stack([z, z + 0.05, z - 0.02], 1), "cr_r": torch.stack([a, b, c], 1),
             "jaw_c": torch.stack([z, z - 0.2, z - 0.03], 1),
             "jaw_r": torch.stack([a * (0.83 + 0.07 * s[2]), 0.42 * (1 + 0.08 * s[3]), z + 0.45], 1),
             "ex": 0.16 * (1 + 0.08 * s[4]), "ew": 0.08 * (1 + 0.1 * s[5]), "ye": 0.02 + 0.02 * s[6],
             "eh_u": 0.04 * (1 + 0.15 * s[5]), "eh_l": 0.025 * (1 + 0.15 * s[5]),
             "tilt": 0.012 * ap[:, 19], "close": ex[:, 3].clamp(0, 1), "bt": 0.014 + 0.014 * ap[:, 16]}
        g.update(bx=g["ex"] + 0.01, bw=g["ew"] * 1.25, by=g["ye"] + 0.085 + 0.025 * ex[:, 2])
        nl, nw, co, si = 0.19 * (1 + 0.12 * s[7]), 0.055 * (1 + 0.2 * s[8]), *_NOSE_CS
        ny = g["ye"] - 0.5 * nl - 0.02
        nr = torch.stack([0.75 * nw, 0.62 * nl, z + 0.07], 1)
        nz = -0.05 + c * (1 - ((ny - 0.05) / b) ** 2).clamp_min(1e-12).sqrt()
        ry2, rz2 = nr[:, 1] ** 2, nr[:, 2] ** 2
        g.update(nose_c=torch.stack([z, ny, nz], 1), nose_r=nr, nw=nw,
                 nb=ny - (co**2 * ry2 + si**2 * rz2).sqrt(),
                 tip_y=ny + si * co * (rz2 - ry2) / (si**2 * ry2 + co**2 * rz2).sqrt())  # front-most point
        g.update(mw=0.11 * (1 + 0.12 * s[9]) * (1 + 0.1 * ex[:, 1]), my=g["nb"] - 0.1, smile=0.03 * ex[:, 1],
                 gap=0.07 * ex[:, 0].clamp(0, 1), tu=0.016 + 0.0096 * ap[:, 17], tl=0.022 + 0.013 * ap[:, 17])
        fr, hlen, bald = ap[:, 15], ap[:, 14], ap[:, 12] >= 1
        g.update(ear_c=torch.stack([a * 0.96, g["ye"] - 0.07, z - 0.08], 1),
                 ear_r=torch.stack([z + 0.05, z + 0.11, z + 0.08], 1),
                 hl0=torch.where(bald, 1.5, 0.3 + 0.45 * ap[:, 12]), vol=0.03 + 0.1 * ap[:, 13], hlen=hlen,
                 fringe_amp=0.12 * (fr.abs() > 0.4).float(), fringe_x=0.3 * fr.sign(),
                 curtain=((hlen > 0.55) & ~bald).float(), curtain_len=0.75 + 1.2 * (hlen - 0.55).clamp_min(0),
                 S=_K0 * p["scale"], piv=torch.stack([z, z - 0.35, z], 1),
                 T=torch.stack([tr[:, 0], tr[:, 1] - 0.35 * _K0 - 0.02, z], 1))  # world position of the pivot
        return g

    @staticmethod
    def _ellipsoids(g: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Cranium, jaw, nose, right ear, left ear (skin), hair shell."""
        new = g["cr_c"].new_tensor
        return [_ellipsoid(g["cr_c"], g["cr_r"]), _ellipsoid(g["jaw_c"], g["jaw_r"]),
                _ellipsoid(g["nose_c"], g["nose_r"], _NOSE_TILT),
                _ellipsoid(g["ear_c"] * new([-1.0, 1, 1]), g["ear_r"]), _ellipsoid(g["ear_c"], g["ear_r"]),
                _ellipsoid(g["cr_c"] + new([0.0, 0.015, -0.01]), g["cr_r"] * (1 + g["vol"][:, None]))]

    def _landmarks(self, g: dict[str, Tensor], rot: Tensor) -> Tensor:
        """iBUG-68 texture points (u, v) of the drawn features, lifted onto the skin and projected."""
        gl, dev = _views(g, 1), g["ex"].device

        def lin(*v: float) -> Tensor:
            return torch.tensor(v, device=dev, dtype=torch.float32)

        th = torch.linspace(-1.0, 1.0, 17, device=dev) * 1.68  # jaw: frontal outline of cranium U jaw, 10% in
        dx, dy, y0, rad = th.sin(), -th.cos(), gl["ye"] - 0.06, []
        for cen, r in ((g["cr_c"], g["cr_r"]), (g["jaw_c"], g["jaw_r"])):
            rx, ry, oy = r[:, :1], r[:, 1:2], y0 - cen[:, 1:2]
            qa, qb, qc = (dx / rx) ** 2 + (dy / ry) ** 2, dy * oy / ry**2, (oy / ry) ** 2 - 1
            rad.append((-qb + (qb * qb - qa * qc).clamp_min(1e-12).sqrt()) / qa)
        rad = torch.maximum(*rad) * 0.9
        sb = lin(1, 0.5, 0, -0.5, -1)  # right brow 17-21 outer -> inner, on the upper half of the band
        (by, bt), bu = _brow(gl, sb), gl["bx"] + gl["bw"] * sb
        bv = by + 0.25 * bt
        nv = gl["ye"] + (gl["tip_y"] - gl["ye"]) * lin(0, 1 / 3, 2 / 3, 1)  # bridge 27-30 down to the tip
        ku, kv = gl["nw"] * lin(-1, -0.5, 0, 0.5, 1), gl["nb"] + 0.012 * lin(1, 0.3, 0, 0.3, 1)
        se = lin(1, 0.35, -0.35, -1, -0.35, 0.35)  # right eye 36-41: outer, upper x2, inner, lower x2
        top, bot = _eye_lids(gl, se)
        ev, eu = torch.where(lin(0, 1, 1, 0, 0, 0) > 0, top, bot), gl["ex"] + gl["ew"] * se
        so = lin(-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3, 0, -1 / 3, -2 / 3)  # outer lip 48-59
        si = lin(-0.92, -0.4, 0, 0.4, 0.92, 0.4, 0, -0.4)  # inner lip 60-67
        (ou, _, _, ol), (_, iu, il, _) = _lips(gl, so), _lips(gl, si)
        li = torch.cat([iu[:, :5], il[:, 5:]], 1)
        li[:, [0, 4]] = 0.5 * (iu + il)[:, [0, 4]]
        left = [3, 2, 1, 0, 5, 4]  # left eye 42-47 from the mirrored right-eye points
        u = torch.cat([dx * rad, -bu, bu.flip(1), torch.zeros_like(nv), ku.expand_as(kv), -eu, eu[:, left],
                       gl["mw"] * torch.cat([so, si])], 1)
        v = torch.cat([y0 + dy * rad, bv, bv.flip(1), nv, kv, ev, ev[:, left], ou[:, :7], ol[:, 7:], li], 1)
        eye3 = torch.eye(3, device=dev).expand(u.shape[0], 3, 3)  # cast along -z in the head frame
        frame = (u.new_tensor([0.0, 0.0, _Z0]).expand_as(eye3[:, 0]), eye3[:, 0], eye3[:, 1], -eye3[:, 2])
        t = torch.stack([_hit(_quadric(frame, e, 1)[0], u, v, u * v) for e in self._ellipsoids(g)[:3]])
        t = t.amin(0)
        pts = torch.stack([u, v, torch.where(t < _MISS, _Z0 - t, 0.0)], -1) - g["piv"][:, None]
        w = g["S"][:, None, None] * _mv(rot[:, None], pts) + g["T"][:, None]
        return torch.stack([w[..., 0] + 1, 1 - w[..., 1]], -1) * (0.5 * self.resolution) - 0.5

    def render(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """Returns params plus 'image' (B,3,H,W) in [-1,1], 'mask' (B,H,W) int64, 'landmarks' (B,68,2)."""
        out, g = dict(params), self._geometry(params)
        pose, res, ss, ap = params["pose"], self.resolution, self.supersample, params["appearance"]
        B, dev, n = pose.shape[0], pose.device, res * ss
        rot, S, new = _rotation(pose), g["S"][:, None], ap.new_tensor
        rt = rot.transpose(1, 2)
        e0 = (_Z0 * rot[:, 2] - _mv(rt, g["T"])) / S + g["piv"]  # rays (x, y, Z0) - t z in the head frame
        frame = (e0, rot[:, 0] / S, rot[:, 1] / S, -rot[:, 2] / S)
        ells, lh = self._ellipsoids(g), _mv(rt, params["light"])  # light and half vector in the head frame
        hv, nose = lh + rot[:, 2], _mm(ells[2][0].transpose(1, 2), ells[2][0])
        skin, hcol, icol, red = ap[:, 0:3], ap[:, 3:6], ap[:, 6:9], ap[:, 18:19]
        const = [new(v).expand_as(skin) for v in ([0.25, 0.06, 0.06], [0.92, 0.9, 0.82], [0.95, 0.93, 0.9])]
        layers = [skin * (0.85 - 0.25 * red) + new([0.18, 0.0, 0.02]) * red, const[0], const[1], skin * 0.35,
                  const[2], icol, icol * 0.15, hcol * 0.5 + 0.05, hcol * 0.3, torch.ones_like(skin), hcol]
        ctx = _views({**g, "e0": frame[0], "e1": frame[1], "e2": frame[2], "d": frame[3], "lh": lh,
                      "hv": hv / _dot(hv, hv)[:, None].sqrt(), "inv_pix": S[:, 0] * res / 2,
                      "nose_g": torch.stack([nose[:, 0, 0], nose[:, 1, 1], nose[:, 1, 2], nose[:, 2, 2]], 1),
                      "amb": params["light_ambient"]}, 2)
        ctx["quad"] = [_quadric(frame, e, 2) for e in ells]
        ctx["layers"] = torch.stack(layers, 1).view(B, len(layers), 3, 1, 1)
        lin, lin1 = ((torch.arange(m, device=dev) + 0.5).float() * (2.0 / m) - 1 for m in (n, res))
        rows = res if dev.type != "cpu" else min(res, max(1, self.band_elements // (B * n * ss)))
        acc = torch.empty(B, 5, res, res, device=dev)
        for r in range(0, res, rows):  # CPU: row bands keep the temporaries cache-sized (all samples at once)
            sub = -lin[r * ss:(r + rows) * ss].view(1, -1, 1)
            acc[:, :, r:r + rows] = self._band(ctx, params, lin.view(1, 1, n), sub, lin1.view(1, 1, res),
                                               -lin1[r:r + rows].view(1, -1, 1))
        face, hair = acc[:, 3], acc[:, 4]
        bg = 1 - face - hair  # mask = class with the largest coverage (ties: background, then face)
        out["image"] = acc[:, :3].clamp(0, 1).mul_(2).sub_(1)
        out["mask"] = ((face > bg) & (face >= hair)).long() + 2 * ((hair > bg) & (hair > face)).long()
        out["landmarks"] = self._landmarks(g, rot)
        return out

    def _band(self, gv: dict, prm: dict[str, Tensor], X: Tensor, Y: Tensor, X1: Tensor, Y1: Tensor) -> Tensor:
        """Output rows (B, 5, h, W): RGB in [0, 1], face and hair coverage. Geometry, shading and coverage
        are supersampled on (X, Y); texture (features, albedo, backdrop) is antialiased analytically on the
        output grid (X1, Y1)."""
        e0, e1, e2, d, cr_c, cr_r = gv["e0"], gv["e1"], gv["e2"], gv["d"], gv["cr_c"], gv["cr_r"]
        XY, ts = X * Y, []
        for k, (co, (al, be, ga, de)) in enumerate(gv["quad"]):
            t = _hit(co, X, Y, XY)
            if k == 5:  # hair shell: keep hits inside the hair region only
                q = [(X * al[:, i] + ga[:, i]) + Y * be[:, i] + t * de[:, i] for i in range(3)]
                t = t.add_(1 - _hair(gv, *q, None), alpha=_MISS)
            ts.append(t)
        o = [(X * e1[:, i] + e0[:, i]) + Y * e2[:, i] for i in range(3)]
        tc = (cr_c[:, 2] - 0.3 * cr_r[:, 2] - o[2]) / d[:, 2]  # long-hair curtain: plane behind the ears
        cx, cy = (o[i] + tc * d[:, i] for i in range(2))
        dy = cy - cr_c[:, 1]
        dy = dy.clamp_min(0) / (0.9 * cr_r[:, 1]) + dy.clamp_max_(0) / gv["curtain_len"]
        inside = torch.minimum(1 - (cx / (cr_r[:, 0] * (1 + gv["vol"]) * 0.97)) ** 2 - dy**4,
                               torch.maximum(cx.abs() - 0.2, cy - gv["jaw_c"][:, 1]))  # slot for the neck
        ts.append(tc.add_(1 - _step(inside) * gv["curtain"], alpha=_MISS))
        # nearest surface per group: cranium/jaw, nose, ears, hair (shell, curtain)
        groups = [torch.minimum(ts[0], ts[1]), ts[2], torch.minimum(ts[3], ts[4]), torch.minimum(*ts[5:])]
        tb = torch.minimum(torch.minimum(groups[0], groups[1]), torch.minimum(groups[2], groups[3]))
        i_cj, i_no, i_ear, i_hair = (((t - tb) * -1e7).add_(1).clamp_(0, 1) for t in groups)
        hit = _step(_MISS / 2 - tb)
        p = [(o[i] + tb * d[:, i]).mul_(hit) for i in range(3)]
        # unnormalised normals, normalised once: cranium/jaw blended across their crease (also for the ears
        # and the concentric hair shell), nose, curtain (+z)
        w, jc, jr, ng = ((ts[0] - ts[1]) * 2.5 + 0.5).clamp_(0, 1), gv["jaw_c"], gv["jaw_r"], gv["nose_g"]
        dn = [p[i] - gv["nose_c"][:, i] for i in range(3)]
        n_no = [dn[0] * ng[:, 0], dn[1] * ng[:, 1] + dn[2] * ng[:, 2], dn[1] * ng[:, 2] + dn[2] * ng[:, 3]]
        i_round = 1 - i_no - _step(tb - ts[6] + 1e-7)
        nrm = [i_round * torch.lerp((p[i] - cr_c[:, i]) / cr_r[:, i] ** 2, (p[i] - jc[:, i]) / jr[:, i] ** 2,
                                    w) + i_no * n_no[i] for i in range(3)]
        nrm[2] = nrm[2] + 2 * (1 - i_round - i_no)
        inv = torch.rsqrt(nrm[0] * nrm[0] + nrm[1] * nrm[1] + nrm[2] * nrm[2] + 1e-12)
        lh, hv, amb = gv["lh"], gv["hv"], gv["amb"]
        ndl = (nrm[0] * lh[:, 0] + nrm[1] * lh[:, 1] + nrm[2] * lh[:, 2]).mul_(inv)
        ndh = (nrm[0] * hv[:, 0] + nrm[1] * hv[:, 1] + nrm[2] * hv[:, 2]).mul_(inv)
        shade = ndl.clamp_min_(0).mul_(1 - amb).add_(amb).mul_(hit)
        lobe = ((ndh - 0.82) * 6).clamp_(0, 1).square_().mul_(hit)  # highlight without denormal-prone pow
        cov = [hit, shade, lobe, i_hair.mul_(hit), i_ear.mul_(hit)] + p
        hit, shade, lobe, on_hair, on_ear, *p = _pool(cov, X.shape[-1] // X1.shape[-1])
        inv_hit = 1 / hit.clamp_min(1e-6)
        p = [v * inv_hit for v in p]  # mean surface point of the covered subpixels
        qc = [(p[i] - cr_c[:, i]) / cr_r[:, i] for i in range(3)]
        scalp, pred = (hit - on_hair - on_ear).clamp_min_(0), _hair(gv, *qc, gv["inv_pix"])  # skin or hair
        hard = on_hair + scalp * _step(pred - 0.5)
        alb, gloss = self._albedo(gv, prm, p, (on_hair + scalp * pred) * inv_hit, qc)
        tint, bg, spec = prm["light_tint"].view(-1, 3, 1, 1), self._backdrop(gv, prm, X1, Y1), lobe * gloss
        rest = 1 - hit
        rgb = [alb[c] * (shade * tint[:, c]) + spec + bg[c] * rest for c in range(3)]
        return torch.stack(rgb + [hit - hard, hard], 1)

    @staticmethod
    def _albedo(g: dict, prm: dict, p: list[Tensor], hair: Tensor, qc: list[Tensor]) -> tuple[list, Tensor]:
        """Per-channel albedo painted in frontal texture coordinates (u, v) = (x, y), and specular weight."""
        def cov(d: Tensor) -> Tensor:  # signed distance (head units, > 0 inside) -> pixel coverage
            return (d * g["inv_pix"] + 0.5).clamp_(0, 1)

        def inside(hi: Tensor, lo: Tensor, lat: Tensor) -> Tensor:
            return cov(torch.minimum(torch.minimum(hi, lo), lat))

        def disk(dx: Tensor, dy: Tensor, r: Tensor | float) -> Tensor:
            return cov((r * r - dx * dx - dy * dy) / (2 * r))  # ~ r - |d| near the rim, no sqrt

        u, v = p[0] + 10 * _step(0.05 - p[2]), p[1]  # features on the front half only
        au = u.abs()
        s = (au - g["ex"]) / g["ew"]
        (top, bot), lat = _eye_lids(g, s), (1 - s.abs()) * g["ew"]
        eye, lash = inside(top - v, v - bot, lat), inside(top + 0.01 - v, v - top + 0.004, lat + 0.006)
        gz, ir = prm["gaze"].view(-1, 2, 1, 1), 0.5 * (g["eh_u"] + g["eh_l"])
        ix = u - u.sign() * g["ex"] - 0.03 * gz[:, 0]
        iy = v - g["ye"] - 0.012 * gz[:, 1] - 0.004 * (1 - g["close"])
        iris, pupil = eye * disk(ix, iy, ir), eye * disk(ix, iy, 0.45 * ir)
        glint = eye * disk(ix + 0.35 * ir, iy - 0.35 * ir, 0.22 * ir)
        sb = (au - g["bx"]) / g["bw"]
        yb, bh = _brow(g, sb)
        brow = cov(torch.minimum(0.5 * bh - (v - yb).abs(), (1 - sb.abs()) * g["bw"]))
        nost = disk((au - 0.5 * g["nw"]) * 0.45, v - g["nb"] - 0.013, 0.01) * 0.8
        sm = u / g["mw"]
        (ou, iu, il, ol), mlat = _lips(g, sm), (1 - sm.abs()) * g["mw"]
        lips, inner = inside(ou - v, v - ol, mlat), inside(iu - v, v - il, mlat)
        teeth = inner * cov(v - iu + torch.clamp(0.4 * (iu - il), max=0.018))
        masks = [lips, inner, teeth, nost, eye, iris, pupil, brow, lash, glint]
        frac = 12 * qc[0] / (qc[1] + 1.8) + 3 * qc[2]
        strands = (frac - frac.floor() - 0.5).abs_().mul_(0.25).add_(0.88)  # triangle-wave hair strands
        pal, skin, alb = g["layers"], prm["appearance"][:, 0:3].reshape(-1, 3, 1, 1), []
        for c in range(3):
            a = lips * (pal[:, 0, c] - skin[:, c]) + skin[:, c]
            for k in range(1, len(masks)):
                a = torch.lerp(a, pal[:, k, c], masks[k])
            alb.append(torch.lerp(a, strands * pal[:, -1, c], hair))
        return alb, 0.08 + 0.25 * glint + 0.06 * lips

    @staticmethod
    def _backdrop(g: dict[str, Tensor], prm: dict[str, Tensor], X: Tensor, Y: Tensor) -> list[Tensor]:
        """Image-level backdrop behind the head, per channel: gradient + soft blobs, neck and shoulders."""
        bg, ap = (prm[k].view(prm[k].shape + (1, 1)) for k in ("background", "appearance"))
        tint, lgt = prm["light_tint"].view(-1, 3, 1, 1), prm["light"].view(-1, 3, 1, 1)
        S, tx, ty, amb = g["S"], g["T"][:, 0], g["T"][:, 1], g["amb"]
        ramp = (X * bg[:, 6] + Y * bg[:, 7]) * 0.5 + 0.5
        blobs = [torch.exp(-(((X - bg[:, 8 + 2 * k]) / bg[:, 14 + k]) ** 2).clamp_max(30))  # no denormals
                 * (0.5 * torch.exp(-(((Y - bg[:, 9 + 2 * k]) / bg[:, 14 + k]) ** 2).clamp_max(30)))
                 for k in range(3)]
        nx = (X - tx) / (0.17 * S)
        nz = (1 - nx * nx).clamp_min(1e-12).sqrt()
        neck = (nx * lgt[:, 0] + nz * lgt[:, 2]).clamp_min(0) * (1 - amb) + amb
        neck_a = ((1 - nx.abs()) * 8).clamp(0, 1) * _step(ty + 0.1 * S - Y)
        sx, sy = (X - tx) / (0.95 * S), (Y - ty + 0.62 * S) / (0.3 * S)
        shirt_a = ((1 - sx * sx - sy * sy) * 20).clamp_(0, 1)
        shirt = amb + (1 - amb) * (0.6 - 0.4 * sy).clamp(0, 1)
        out = []
        for c in range(3):
            img = ramp * (bg[:, 3 + c] - bg[:, c]) + bg[:, c]
            for k in range(3):
                img = torch.lerp(img, bg[:, 17 + 3 * k + c], blobs[k])
            img = torch.lerp(img, (ap[:, c] * tint[:, c]) * (neck * 0.85), neck_a)
            out.append(torch.lerp(img, (ap[:, 9 + c] * tint[:, c]) * shirt, shirt_a))
        return out
