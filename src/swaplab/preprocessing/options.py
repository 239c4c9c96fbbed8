"""What preprocessing extracts and how it stores it: the keys of conf/preprocess.yaml, checked at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from swaplab.data import store as st
from swaplab.faces.templates import CANONICAL, get_template

CHOICES = {"faces": ("largest", "all"), "landmarks": ("detector", "dlib68"), "identity": ("folder", "file", "none")}


@dataclass
class PreprocessOptions:
    """What to extract and how to store it (the keys of conf/preprocess.yaml)."""

    template: str = CANONICAL  # alignment template (swaplab.faces.templates); its size is the crop size
    size: int | None = None  # crop size overriding the template's own
    faces: str = "largest"  # per image: the largest face passing the filters, or "all" of them
    min_score: float = 0.9  # detector score below which a face is dropped
    min_face_size: int = 40  # shorter box side (pixels) below which a face is dropped
    landmarks: str = "detector"  # "detector" (5 points) or "dlib68" (68 points, used by ffhq templates)
    parsing: bool = False  # store 19-class parsing labels
    frames: str | int = "all"  # per video: "all" or k evenly spaced frames
    identity: str = "folder"  # "folder" (first folder under the input), "file" (file stem) or "none"
    codec: str = "jpeg"  # jpeg | png | raw
    jpeg_quality: int = 95
    shard_size: int = 1000  # most faces per shard (a unit with more gets a shard of its own)
    num_workers: int = 2  # decoding processes
    batch_size: int = 16  # images per detection batch
    chunk_frames: int = 16  # video frames decoded per work item (bounds memory for long videos)
    log_every: int = 100  # units between progress lines when no progress bar is shown

    def problems(self) -> list[str]:
        out = []
        try:
            get_template(self.template)
        except ValueError as err:
            out.append(str(err))
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                out.append(f"{key} must be one of {list(allowed)}, got {getattr(self, key)!r}")
        if self.codec not in st.CODECS:
            out.append(f"codec must be one of {list(st.CODECS)}, got {self.codec!r}")
        if not (self.frames == "all" or (isinstance(self.frames, int) and self.frames > 0)):
            out.append(f"frames must be 'all' or a positive number of evenly spaced frames, got {self.frames!r}")
        for key, low in (("size", 8), ("shard_size", 1), ("batch_size", 1), ("chunk_frames", 1),
                         ("num_workers", 0), ("min_face_size", 0), ("log_every", 1)):
            value = getattr(self, key)
            if not (value is None and key == "size") and not (isinstance(value, int) and value >= low):
                out.append(f"{key} must be an integer >= {low}, got {value!r}")
        if not 1 <= self.jpeg_quality <= 100:
            out.append(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if not 0.0 <= self.min_score <= 1.0:
            out.append(f"min_score must be in [0, 1], got {self.min_score}")
        return out
