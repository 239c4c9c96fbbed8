"""Our training step against the public implementation's own step, on the same network, batch and identity network,
timed in one run and in turn (peer step, our bare loop, our Lightning step, batch after batch), in alternating
rounds of settings. Prints one JSON object; --save writes results/peers_<device>.json.

    SWAPLAB_PEER_FACESHIFTER=/tmp/peers/faceshifter SWAPLAB_PEER_FSGAN=/tmp/peers/fsgan \
    SWAPLAB_PEER_HIFIFACE=/tmp/peers/hififace .venv/bin/python experiments/benchmarks/peers.py --save

Peer code is never part of swaplab: each peer's folder comes from its environment variable (PEERS below; the
README's "Peer comparisons" lists the files and commits), and its modules are imported from there. Peer
dependencies that the timed step does not need (apex, visdom, wandb, checkpoint files) are avoided, not installed.
A peer whose variable is unset is reported as skipped. Ratios are peer seconds / our seconds (> 1: ours faster).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import train_step  # noqa: E402

# our side of each comparison: train_step.py --model and overrides giving the peer's network sizes
IR_SE50 = ["experts.identity._target_=swaplab.experts.IdentityEncoder.build_ir_se", "~experts.identity.depth",
           "experts.identity.registry_key=ir_se50_treb1en"]
PEERS = {
    "faceshifter": {"env": "SWAPLAB_PEER_FACESHIFTER", "model": "faceshifter",
                    "overrides": ["experiment=faceshifter_paper", *IR_SE50], "resolution": 256},
    # the 256 px phase (both pyramid levels, no progressive half-resolution steps); the step of
    # v1 train_reenactment_stepwise.py (direct + two-step paths), which ours follows
    "fsgan": {"env": "SWAPLAB_PEER_FSGAN", "model": "fsgan",
              "overrides": ["experiment=fsgan_reenactment", "model.progressive_steps=0", "model.full_resolution_lr=null",
                            "model.full_resolution_batch=null"], "resolution": 256},
    # Ours-256's widths (generator and StarGAN-v2 D 64..512) with the peer's LPIPS backbone (VGG; ours: AlexNet)
    "hififace": {"env": "SWAPLAB_PEER_HIFIFACE", "model": "hififace",
                 "overrides": ["experiment=hififace_256", "experts.lpips.net=vgg"], "resolution": 256},
    # the same networks on both sides: ours with the peer's D (pix2pixHD MultiscaleDiscriminator(3): 3 scales,
    # 64..512, BatchNorm, 8.30M) in place of the paper's StarGAN-v2 D; our D loss (non-saturating + R1) kept
    "hififace_peer_d": {"env": "SWAPLAB_PEER_HIFIFACE", "model": "hififace", "builder": "hififace",
                        "overrides": ["experiment=hififace_256", "experts.lpips.net=vgg",
                                      "model.discriminator._target_=swaplab.nets.discriminators.MultiScaleDiscriminator",
                                      "~model.discriminator.resolution", "+model.discriminator.num_scales=3",
                                      "+model.discriminator.num_layers=3", "+model.discriminator.norm=batch"],
                        "resolution": 256},
}
# (our Lightning precision, our extra overrides); the peer always runs its own loop (fp32 on a CPU)
SETTINGS = {
    "fp32": ("32-true", []),
    "fast": ("bf16-mixed", ["model.channels_last=true"]),
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="*", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds over the settings")
    parser.add_argument("--steps", type=int, default=3, help="timed steps of each side per round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=None, help="default: the peer's (PEERS)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one step of each side (torch.profiler) in the first fp32 round")
    parser.add_argument("--tiny", action="store_true", help="tiny networks (tests; needs a peer of that size)")
    parser.add_argument("--save", action="store_true", help="write results/peers_<device>.json")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "SETTING"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


@contextlib.contextmanager
def peer_imports(folder: str, packages: tuple[str, ...]):
    """Import from the peer's folder; its top-level package names are dropped from sys.modules afterwards so that
    peers with clashing names (`model`, `network`) do not see each other's."""
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)
        for name in [n for n in sys.modules if n.split(".")[0] in packages]:
            del sys.modules[name]


# ---- peers: each builds the peer's networks and returns its training step (one G and one D update) ----------

def faceshifter_step(folder: str, ours, batch: dict, device: torch.device):
    """taotaonice/FaceShifter train_AEI.py's iteration without apex (fp32), on its own AEI_Net(c_id=512) and
    MultiscaleDiscriminator(3, n_layers=6, InstanceNorm2d). Its identity network is ours (the same IR-SE50 module
    and weights, copied), left trainable as train_AEI.py leaves its `arcface` (so its backward also computes the
    identity net's weight gradients, as the peer's does); the crop [19:237] of 256 is scaled to the resolution."""
    with peer_imports(folder, ("network",)):
        aei = importlib.import_module("network.AEI_Net")
        msd = importlib.import_module("network.MultiscaleDiscriminator")
    G = aei.AEI_Net(c_id=512).to(device).train()
    D = msd.MultiscaleDiscriminator(input_nc=3, n_layers=6, norm_layer=torch.nn.InstanceNorm2d).to(device).train()
    net = copy.deepcopy(ours.experts.identity.net).requires_grad_(True).eval()
    size = ours.experts.identity.input_size
    opt_G = torch.optim.Adam(G.parameters(), lr=4e-4, betas=(0.0, 0.999))  # (0, 0.999): torch 2.15 wants floats
    opt_D = torch.optim.Adam(D.parameters(), lr=4e-4, betas=(0.0, 0.999))  # (0, 0.999): torch 2.15 wants floats
    Xs, Xt = batch["source"].contiguous(), batch["target"].contiguous()
    same_person = batch["same_image"].float()
    side = Xs.shape[-1]
    lo, hi = round(19 * side / 256), round(237 * side / 256)
    batch_size = Xs.shape[0]

    def arcface(x):  # TreB1eN's Backbone returns l2_norm(output_layer(...))
        return F.normalize(net(F.interpolate(x[:, :, lo:hi, lo:hi], [size, size], mode="bilinear",
                                             align_corners=True)))

    def hinge_loss(X, positive=True):
        return torch.relu(1 - X).mean() if positive else torch.relu(X + 1).mean()

    def step() -> None:
        with torch.no_grad():
            embed = arcface(Xs)
        opt_G.zero_grad()
        Y, Xt_attr = G(Xt, embed)
        L_adv = sum(hinge_loss(di[0], True) for di in D(Y))
        L_id = (1 - torch.cosine_similarity(embed, arcface(Y), dim=1)).mean()
        Y_attr = G.get_attr(Y)
        L_attr = sum(torch.mean(torch.pow(a - b, 2).reshape(batch_size, -1), dim=1).mean()
                     for a, b in zip(Xt_attr, Y_attr, strict=True)) / 2.0
        L_rec = torch.sum(0.5 * torch.mean(torch.pow(Y - Xt, 2).reshape(batch_size, -1), dim=1) * same_person) / (
            same_person.sum() + 1e-6)
        lossG = 1 * L_adv + 10 * L_attr + 5 * L_id + 10 * L_rec
        lossG.backward()
        opt_G.step()
        opt_D.zero_grad()
        loss_fake = sum(hinge_loss(di[0], False) for di in D(Y.detach()))
        loss_true = sum(hinge_loss(di[0], True) for di in D(Xs))
        lossD = 0.5 * (loss_true.mean() + loss_fake.mean())
        lossD.backward()
        opt_D.step()
        (lossD.item(), lossG.item(), L_adv.item())  # the loop prints these every iteration

    return step, {"G": G, "D": D}


@contextlib.contextmanager
def fsgan_package(folder: str):
    """v1's modules import themselves as `fsgan.*`: the checkout must be importable under that name."""
    import tempfile

    path = Path(folder).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        parent = str(path.parent)
        if path.name != "fsgan":
            (Path(tmp) / "fsgan").symlink_to(path)
            parent = tmp
        with peer_imports(parent, ("fsgan",)):
            yield


def fsgan_step(folder: str, ours, batch: dict, device: torch.device):
    """YuvalNirkin/fsgan v1 train_reenactment_stepwise.py's iteration with experiments/reenactment/
    ijbc_v2_msr-unet_stepwise.py's objects: MultiScaleResUNet(in_nc=71, out_nc=(3, 3), flat_layers=(2, 0, 2, 3),
    ngf=128), pix2pix MultiscaleDiscriminator(use_sigmoid=True, num_D=2), GANLoss(use_lsgan=True), VGGLoss id and
    attr (VGG19-BN; random weights: their checkpoint files are not loaded), L1, CrossEntropy, seg_weight 0.01,
    Adam(betas=(0.5, 0.999)); landmark heatmaps by v1's LandmarkHeatmap (kernel 13 at full size, 7 at half).
    Adapted: the midpoint landmarks are the mean of the two 2D sets (v1 rotates 3D landmarks half way; ours does
    the same as here), and the L1 `loss_seg` compares the logits with one-hot labels (v1's dataset gives maps)."""
    with fsgan_package(folder):
        rus = importlib.import_module("fsgan.models.res_unet_split")
        pix = importlib.import_module("fsgan.models.discriminators_pix2pix")
        vgg_loss = importlib.import_module("fsgan.criterions.vgg_loss")
        gan_loss = importlib.import_module("fsgan.criterions.gan_loss")
        heatmap = importlib.import_module("fsgan.utils.heatmap")
        img_utils = importlib.import_module("fsgan.utils.img_utils")
        utils = importlib.import_module("fsgan.utils.utils")
    G = rus.MultiScaleResUNet(in_nc=71, out_nc=(3, 3), flat_layers=(2, 0, 2, 3), ngf=128).to(device).train()
    D = pix.MultiscaleDiscriminator(use_sigmoid=True, num_D=2).to(device).train()
    G.apply(utils.init_weights), D.apply(utils.init_weights)
    no_file = {"state_dict": {"classifier.6.weight": None, "classifier.6.bias": None}}  # load_state_dict(strict=False)
    with mock_torch_load(no_file):
        criterion_id, criterion_attr = vgg_loss.VGGLoss("id.pth").to(device), vgg_loss.VGGLoss("attr.pth").to(device)
    criterion_id.train(False), criterion_attr.train(False)
    criterion_pixelwise, criterion_gan = torch.nn.L1Loss(), gan_loss.GANLoss(use_lsgan=True)
    criterion_seg = torch.nn.CrossEntropyLoss()
    side = batch["target"].shape[-1]
    landmarks2heatmaps = [heatmap.LandmarkHeatmap(kernel_size=13, size=(side, side)).to(device),
                          heatmap.LandmarkHeatmap(kernel_size=7, size=(side // 2, side // 2)).to(device)]
    optimizer_G = torch.optim.Adam(G.parameters(), lr=4e-5, betas=(0.5, 0.999))
    optimizer_D = torch.optim.Adam(D.parameters(), lr=4e-6, betas=(0.5, 0.999))
    img1 = img_utils.create_pyramid(batch["source"].contiguous(), 2)
    img2 = img_utils.create_pyramid(batch["target"].contiguous(), 2)
    points1, points2 = batch["source_landmarks"], batch["target_landmarks"]
    labels = batch["target_mask"].long().clamp(0, 2)
    seg2 = [labels]
    seg_onehot = F.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    rec_weight, seg_weight, gan_weight = 1.0, 0.01, 0.001

    def step() -> None:
        landmarks2, input, input_inter = [], [], []
        for j in range(len(img1)):
            scale = 0.5 ** j
            inter = landmarks2heatmaps[j]((points1 + points2) / 2 * scale)
            landmarks2.append(landmarks2heatmaps[j](points2 * scale))
            input.append(torch.cat((img1[j], landmarks2[j]), dim=1))
            input_inter.append(torch.cat((img1[j], inter), dim=1))
        img_inter_pred, seg_inter_pred = G(input_inter)
        img_inter_pred = img_utils.create_pyramid(img_inter_pred, 2)
        input_inter = [torch.cat((img_inter_pred[j], landmarks2[j]), dim=1) for j in range(len(img_inter_pred))]
        img_inter_pred, seg_inter_pred = G(input_inter)
        img_pred, seg_pred = G(input)
        img_pred_pyd = img_utils.create_pyramid(img_pred, len(img1))
        pred_fake_pool = D([x.detach() for x in img_pred_pyd])
        loss_D_fake = criterion_gan(pred_fake_pool, False)
        pred_real = D(img2)
        loss_D_real = criterion_gan(pred_real, True)
        loss_D_total = (loss_D_fake + loss_D_real) * 0.5
        pred_fake = D(img_pred_pyd)
        loss_G_GAN = criterion_gan(pred_fake, True)
        loss_pixelwise = criterion_pixelwise(img_pred, img2[0])
        loss_id = criterion_id(img_pred, img2[0])
        loss_attr = criterion_attr(img_pred, img2[0])
        loss_rec = 0.1 * loss_pixelwise + 0.5 * loss_id + 0.5 * loss_attr
        loss_seg = criterion_pixelwise(seg_pred, seg_onehot)
        loss_pixelwise_con = criterion_pixelwise(img_inter_pred, img2[0])
        loss_id_con = criterion_id(img_inter_pred, img2[0])
        loss_seg_con = criterion_seg(seg_inter_pred, seg2[0])
        loss_rec_con = 0.1 * loss_pixelwise_con + 1.0 * loss_id_con
        loss_G_total = rec_weight * 0.5 * (loss_rec + loss_rec_con) + \
            seg_weight * 0.5 * (loss_seg + loss_seg_con) + gan_weight * loss_G_GAN
        optimizer_G.zero_grad()
        loss_G_total.backward()
        optimizer_G.step()
        optimizer_D.zero_grad()
        loss_D_total.backward()
        optimizer_D.step()
        for value in (loss_pixelwise, loss_id, loss_rec, loss_seg, loss_G_GAN, loss_D_total):
            value.item()  # its logger reads these every iteration

    return step, {"G": G, "D": D}


@contextlib.contextmanager
def mock_torch_load(value):
    """torch.load returns `value` (or `value(path)` when callable): a peer's constructor that loads a checkpoint
    file gets random weights."""
    original = torch.load
    torch.load = lambda path, *args, **kwargs: value(path) if callable(value) else copy.deepcopy(value)
    try:
        yield
    finally:
        torch.load = original


@contextlib.contextmanager
def hififace_standins(experts):
    """In-process stand-ins for what maum-ai/hififace's model/{hififace,loss}.py import but the checkout lacks,
    each built on our experts so that both sides run the same networks with the same random weights:
    - the git submodule model/arcface_torch: `iresnet100(pretrained, fp16)` -> a copy of our identity net
      (IResNet-100, the same architecture);
    - the git submodule model/Deep3DFaceRecon_pytorch: `ReconNetWrapper(net_recon, use_last_fc)` -> a copy of our
      3DMM net (ResNet-50 + the official 1x1 heads, 257 coefficients), and `ParametricFaceModel()` whose
      `compute_for_render(c)` returns (None, None, None, landmarks) with our BFM's 68 projected landmarks (the
      real one also builds the whole mesh, texture, normals and SH colour: work not timed here);
    - `lpips.LPIPS(net="vgg")` -> a copy of our LPIPS module (the lpips package's own LPIPS, VGG, frozen as
      lpips leaves it), so that nothing is downloaded."""
    import types

    face3d = experts.face3d

    class ParametricFaceModel:  # noqa: D101 - the stand-in of Deep3DFaceRecon's BFM wrapper (see above)
        def compute_for_render(self, coeffs):
            return None, None, None, face3d.landmarks(coeffs)

    def trainable(net):  # the peer's nets are plain nn.Modules: their weights require gradients
        return copy.deepcopy(net).requires_grad_(True)

    root = "model.Deep3DFaceRecon_pytorch"
    contents = {
        "model.arcface_torch": {}, "model.arcface_torch.backbones": {},
        "model.arcface_torch.backbones.iresnet": {
            "iresnet100": lambda pretrained=False, fp16=False: trainable(experts.identity.net)},
        root: {}, f"{root}.models": {},
        f"{root}.models.networks": {
            "ReconNetWrapper": lambda net_recon="resnet50", use_last_fc=False: trainable(face3d.net)},
        f"{root}.models.bfm": {"ParametricFaceModel": ParametricFaceModel},
        "lpips": {"LPIPS": lambda net="vgg", **kwargs: copy.deepcopy(experts.lpips.net)},
    }
    saved = {name: sys.modules.get(name) for name in contents}
    for name, attrs in contents.items():
        module = types.ModuleType(name)
        module.__path__ = []  # a package, so that its submodules import
        module.__dict__.update(attrs)
        sys.modules[name] = module
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def hififace_step(folder: str, ours, batch: dict, device: torch.device):
    """maum-ai/hififace hififace_pl.py's training_step (G then D, manual optimisation) as a plain loop, with
    config/model.yaml's objects: model.hififace.Generator (its ShapeAwareIdentityExtractor runs f_3d and f_id
    without gradients), pix2pixHD MultiscaleDiscriminator(input_nc=3) (3 scales, BatchNorm), model.loss.GLoss
    (SID + realism: hinge adversarial, 100 seg, 20 rec, 1 cyc, 5 LPIPS) and DLoss, AdamW(1e-4, (0, 0.999)) for
    both; every loss value is read (`self.log`). Submodules, BFM and LPIPS: `hififace_standins`; their
    checkpoint loads get our nets' own weights. M_tar is our dilated face mask of the batch and `same` its
    same-identity flag, shaped (B, 1) as its dataset's."""
    with hififace_standins(ours.experts), peer_imports(folder, ("model",)):
        hifi = importlib.import_module("model.hififace")
        msd = importlib.import_module("model.multiscalediscriminator")
        loss = importlib.import_module("model.loss")
        states = {"f3d": {"net_recon": ours.experts.face3d.net.state_dict()},
                  "fid": ours.experts.identity.net.state_dict()}
        paths = {"f_3d_checkpoint_path": "f3d", "f_id_checkpoint_path": "fid"}
        with mock_torch_load(lambda path: states[path]):
            G = hifi.Generator(identity_extractor_config=paths).to(device).train()
            g_loss = loss.GLoss(**paths, realism_config={}, sid_config={}).to(device)
        D = msd.MultiscaleDiscriminator(input_nc=3).to(device).train()
        d_loss = loss.DLoss()
    opt_g = torch.optim.AdamW(G.parameters(), lr=1e-4, betas=(0.0, 0.999))
    opt_d = torch.optim.AdamW(D.parameters(), lr=1e-4, betas=(0.0, 0.999))
    i_s, i_t = batch["source"].contiguous(), batch["target"].contiguous()
    m_tar = ours.target_mask(batch["target"], batch)  # the batch's labels, as our step reads them
    same = batch["same_identity"].float().reshape(-1, 1)

    def step() -> None:
        i_r, i_low, m_r, m_low = G(i_s, i_t)
        i_cycle, _, _, _ = G(i_t, i_r)
        d_r = D(i_r)
        g_total, g_terms, _ = g_loss(i_s, i_t, i_r, i_low, i_cycle, m_tar, m_r, m_low, d_r, same)
        opt_g.zero_grad()
        g_total.backward()
        opt_g.step()
        d_total, d_terms = d_loss(D(i_t), D(i_r.detach()))
        opt_d.zero_grad()
        d_total.backward()
        opt_d.step()
        for value in (*g_terms.values(), *d_terms.values()):
            value.item()  # self.log reads each value every step

    return step, {"G": G, "D": D, "G.id_extractor": G.id_extractor}  # G counts its frozen f_3d and f_id


BUILDERS = {"faceshifter": faceshifter_step, "fsgan": fsgan_step, "hififace": hififace_step}


# ---- one process: one method, one setting --------------------------------------------------------------------

def params(modules: dict) -> dict:
    return {name: sum(p.numel() for p in m.parameters()) for name, m in modules.items()}


def profile_top(step, device: torch.device, rows: int = 12) -> list[dict]:
    """Self CPU (and CUDA) time of the costliest ops of one step."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        train_step.synchronize(device)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 1),
             "self_cpu_percent": round(100 * e.self_cpu_time_total / total, 1)} for e in events[:rows]]


def child(method: str, setting: str, args: argparse.Namespace) -> dict:
    spec, (precision, switches) = PEERS[method], SETTINGS[setting]
    folder = os.environ[spec["env"]]
    ours_args = train_step.parse(["--model", spec["model"], "--precision", precision, "--device", args.device,
                                  *(["--tiny"] if args.tiny else ["--batch-size", str(args.batch_size)]),
                                  *(["--resolution", str(args.resolution or spec["resolution"])]
                                    if not args.tiny else []),
                                  "--override", *(spec.get("tiny_overrides", []) if args.tiny else spec["overrides"]),
                                  *switches])
    _, model, batch, device = train_step.prepare(ours_args)
    peer, peer_modules = BUILDERS[spec.get("builder", method)](folder, model, batch, device)
    bare = train_step.bare_step_fn(model, batch, device, precision)
    result = {"method": method, "setting": setting, "precision": precision, "overrides": ours_args.override,
              "resolution": ours_args.resolution, "batch_size": ours_args.batch_size,
              "params_ours": model.parameter_counts(), "params_peer": params(peer_modules)}
    times, lightning = train_step.interleaved_times(model, batch, {"peer": peer, "bare": bare}, args.warmup,
                                                    args.steps, precision, device)
    result.update(peer_seconds=[round(t, 4) for t in times["peer"]],
                  bare_seconds=[round(t, 4) for t in times["bare"]],
                  lightning_seconds=[round(t, 4) for t in lightning],
                  load_average=[round(x, 2) for x in os.getloadavg()], **train_step.peak_memory(device))
    if args.profile:  # after the timed steps: everything is warm
        result["profile"] = {"ours_bare": profile_top(bare, device), "peer": profile_top(peer, device)}
    return result


# ---- the parent: rounds of child processes, medians and ratios -------------------------------------------------

def run_child(method: str, setting: str, args: argparse.Namespace, profile: bool) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", method, setting, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--device", args.device,
               *(["--resolution", str(args.resolution)] if args.resolution else []),
               *(["--tiny"] if args.tiny else []), *(["--profile"] if profile else [])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"method": method, "setting": setting, "error": done.stderr.strip().splitlines()[-3:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratios(peer: list[float], bare: list[float], lightning: list[float]) -> dict:
    med = {side: statistics.median(values) for side, values in
           (("peer", peer), ("bare", bare), ("lightning", lightning))}
    return {**{f"{side}_median_seconds": round(v, 4) for side, v in med.items()},
            "ratio_lightning": round(med["peer"] / med["lightning"], 3),
            "ratio_bare": round(med["peer"] / med["bare"], 3), "samples": len(peer)}


def summarise(runs: list[dict]) -> dict:
    """Per method and setting: medians of every side over all rounds and peer / ours ratios, and the same per
    round with its load average (a round run on a busier machine shows up there)."""
    out: dict = {}
    for run in runs:
        if "error" in run:
            continue
        entry = out.setdefault(run["method"], {}).setdefault(run["setting"], {"all": ([], [], []), "rounds": []})
        sides = [run[f"{side}_seconds"] for side in ("peer", "bare", "lightning")]
        for values, new in zip(entry["all"], sides, strict=True):
            values += new
        entry["rounds"].append({"round": run.get("round"), **ratios(*sides), "load_average": run["load_average"]})
    return {method: {name: {**ratios(*entry["all"]), "rounds": entry["rounds"]} for name, entry in settings.items()}
            for method, settings in out.items()}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.child:
        print(json.dumps(child(*args.child, args)))
        return {}
    skipped = {m: f"{PEERS[m]['env']} is not set" for m in args.methods if not os.environ.get(PEERS[m]["env"])}
    methods = [m for m in args.methods if m not in skipped]
    runs = []
    for r in range(args.rounds):
        for method in methods:
            for setting in args.settings:
                profile = args.profile and r == 0 and setting == "fp32"
                runs.append({"round": r, **run_child(method, setting, args, profile)})
    from common import machine

    device = train_step.resolve_device(args.device)
    result = {"machine": machine(device), "load_average_start_end": None, "skipped": skipped,
              "summary": summarise(runs), "runs": runs}
    result["load_average_start_end"] = [run.get("load_average") for run in (runs[:1] + runs[-1:])]
    print(json.dumps(result, indent=1))
    if args.save:
        name = (re.sub(r"[^A-Za-z0-9]+", "_", result["machine"]["device"]).strip("_").lower()
                if device.type == "cuda" else f"{os.cpu_count()}cpu")
        path = HERE / "results" / f"peers_{name}.json"
        saved = merge(json.loads(path.read_text()), result) if path.exists() else result
        path.write_text(json.dumps(saved, indent=1) + "\n")
    return result


def merge(old: dict, new: dict) -> dict:
    """The saved file with this run's methods replaced (each method keeps the runs of its latest invocation)."""
    methods = {run["method"] for run in new["runs"]}
    runs = [run for run in old.get("runs", []) if run.get("method") not in methods] + new["runs"]
    return {**old, **{k: v for k, v in new.items() if k not in ("runs", "summary", "skipped")},
            "summary": {**{m: v for m, v in old.get("summary", {}).items() if m not in methods}, **new["summary"]},
            "skipped": {m: v for m, v in {**old.get("skipped", {}), **new["skipped"]}.items()
                        if m not in methods}, "runs": runs}


if __name__ == "__main__":
    main()
