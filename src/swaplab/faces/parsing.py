"""Face-parsing label sets: the 19 CelebAMask-HQ classes (BiSeNet's output order) and their grouping into
named regions (face / hair / background by default)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

# CelebAMask-HQ label order used by face-parsing.PyTorch (prepropess_data.py enumerates these from 1).
CELEBAMASK_CLASSES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)

# Default region groups; they partition the 19 classes. Ears (and earrings) are left out of the face on
# purpose: blending and identity masks follow the inner face. Add "l_ear", "r_ear" to "face" to include them.
DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "background": ("background", "l_ear", "r_ear", "ear_r", "neck", "neck_l", "cloth", "hat"),
    "face": ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "nose", "mouth", "u_lip", "l_lip"),
    "hair": ("hair",),
}


def group_matrix(groups: Mapping[str, Sequence[str | int]], rest: str | None = "background",
                 classes: Sequence[str] = CELEBAMASK_CLASSES) -> tuple[tuple[str, ...], torch.Tensor]:
    """Group names and a G x C 0/1 matrix assigning every class to exactly one group. Classes named in no
    group join group `rest` (added if absent); with rest=None they are an error."""
    names = [str(n) for n in groups]
    matrix = torch.zeros(len(names) + 1, len(classes))
    for g, members in enumerate(groups.values()):
        for member in members:
            if isinstance(member, int):
                c = member
            else:
                c = classes.index(str(member)) if str(member) in classes else -1
            if not 0 <= c < len(classes):
                raise ValueError(f"unknown parsing class {member!r}; known: {list(classes)}")
            if matrix[:, c].any():
                raise ValueError(f"parsing class {classes[c]!r} is in more than one group")
            matrix[g, c] = 1
    unassigned = matrix.sum(0) == 0
    if unassigned.any():
        if rest is None:
            raise ValueError(f"classes {[classes[i] for i in unassigned.nonzero().flatten()]} are in no group")
        if rest not in names:
            names.append(rest)
        matrix[names.index(rest)] += unassigned.float()
    return tuple(names), matrix[: len(names)]
