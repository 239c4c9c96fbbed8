"""Reading selected frames of videos with OpenCV, with one clear reason when a video is unusable.

A video is unusable as a whole ("unopenable video": OpenCV cannot open it, e.g. an mp4 cut before its moov
atom; "truncated video": it opens but a frame its header announces cannot be decoded, e.g. an AVI cut in
half). Callers skip such videos entirely rather than keep a partial, silently shorter set of frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
UNOPENABLE, TRUNCATED = "unopenable video", "truncated video"
SEEK_GAP = 32  # frames: farther jumps seek (the decoder restarts at a keyframe), nearer ones grab() through


class VideoReadError(ValueError):
    """A video that cannot be used; `reason` is UNOPENABLE or TRUNCATED (the skip reason in summaries)."""

    def __init__(self, path: object, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {path}" + (f" ({detail})" if detail else ""))
        self.reason = reason


def evenly_spaced(num_frames: int, k: int) -> np.ndarray:
    """k frame indices spread evenly over [0, num_frames - 1] (unique, sorted); all frames if fewer than k."""
    if num_frames <= 0:
        return np.zeros(0, dtype=int)
    if num_frames <= k:
        return np.arange(num_frames)
    return np.unique(np.linspace(0, num_frames - 1, k).round().astype(int))


def _open(path: object) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoReadError(path, UNOPENABLE, "OpenCV cannot open it")
    return cap


def _count_by_decoding(cap: cv2.VideoCapture) -> int:
    n = 0
    while cap.grab():
        n += 1
    return n


def video_frame_count(path: object) -> int:
    """Frames announced by the video's header (decoded and counted when the header does not say)."""
    cap = _open(path)
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        return count if count > 0 else _count_by_decoding(cap)
    finally:
        cap.release()


def read_video_frames(
    path: object,
    indices: Sequence[int] | np.ndarray | Callable[[int], Sequence[int]] | None = None,
    check_end: bool = True,
) -> tuple[list[np.ndarray], int]:
    """(uint8 H x W x 3 RGB frames at `indices`, the video's frame count).

    `indices`: frame numbers, a function of the frame count giving them (e.g. `lambda n: evenly_spaced(n, 10)`,
    resolved with the video opened once), or None for every frame. Frames are visited in increasing order:
    small gaps are stepped through with grab() (no colour conversion), larger ones seek. With `check_end`
    the last announced frame must decode too, so a cut video is caught even when only early frames are
    wanted. Raises VideoReadError (reason UNOPENABLE or TRUNCATED).
    """
    cap = _open(path)
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:  # some containers (raw streams, some webm) do not announce it
            count = _count_by_decoding(cap)
            cap.release()
            cap = _open(path)
        if indices is None:
            wanted = np.arange(count)
        else:
            wanted = np.asarray(indices(count) if callable(indices) else indices, dtype=np.int64).reshape(-1)
        bad = wanted[(wanted < 0) | (wanted >= count)]
        if len(bad):
            raise IndexError(f"{path}: frame {int(bad[0])} requested, the video has {count} frames")
        order = np.argsort(wanted, kind="stable")
        frames: list[np.ndarray | None] = [None] * len(wanted)
        position, previous, last_k = 0, None, -1  # position: the frame the next grab() returns
        for k in order:
            target = int(wanted[k])
            if target == previous:
                frames[k] = frames[last_k]
                continue
            if target - position > SEEK_GAP:
                cap.set(cv2.CAP_PROP_POS_FRAMES, target)
                position = target
            while position <= target:
                if not cap.grab():
                    raise VideoReadError(path, TRUNCATED, f"frame {position} of {count} does not decode")
                position += 1
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                raise VideoReadError(path, TRUNCATED, f"frame {target} of {count} does not decode")
            frames[k] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else cv2.cvtColor(
                bgr, cv2.COLOR_GRAY2RGB)
            previous, last_k = target, k
        if check_end and count > 0 and position < count:
            if count - 1 - position > SEEK_GAP:
                cap.set(cv2.CAP_PROP_POS_FRAMES, count - 1)
                position = count - 1
            while position < count:
                if not cap.grab():
                    raise VideoReadError(path, TRUNCATED, f"frame {position} of {count} does not decode")
                position += 1
        return frames, count  # type: ignore[return-value]
    finally:
        cap.release()
