"""A checkpoint's recorded experts config, resolved on this machine (swaplab.models.loading.resolve_here)."""

from __future__ import annotations

from omegaconf import OmegaConf

from swaplab.models.loading import resolve_here


def test_recorded_expert_files_are_looked_up_in_this_machines_weights_dir(tmp_path):
    (tmp_path / "epoch_20.pth").write_bytes(b"weights")
    recorded = OmegaConf.create({
        "_target_": "swaplab.experts.Experts",
        "face3d": {"weights_dir": "/training/machine/weights", "path": "/training/machine/weights/epoch_20.pth",
                   "bfm_path": "/training/machine/weights/BFM_model_front.mat"},
        "identity": {"weights_dir": "/training/machine/weights", "path": None}})
    here = resolve_here(recorded, tmp_path)
    assert here.face3d.path == str(tmp_path / "epoch_20.pth")  # found here under its name
    assert here.face3d.bfm_path == "/training/machine/weights/BFM_model_front.mat"  # absent: its loader says so
    assert here.face3d.weights_dir == here.identity.weights_dir == str(tmp_path)
    assert recorded.face3d.weights_dir == "/training/machine/weights"  # the recorded config is left as it was
