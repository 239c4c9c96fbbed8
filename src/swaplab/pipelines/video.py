"""Videos through a `FaceSwapPipeline` with PyAV (FFmpeg): frames decoded and swapped in batches on the device,
landmarks smoothed over time, the original frame rate and frame count kept, the audio stream copied as is."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from tqdm.auto import tqdm

from swaplab.faces.landmarks import five_points
from swaplab.imaging import from_uint8, to_uint8
from swaplab.pipelines.face_swap import FaceCounts, FaceSwapPipeline


class LandmarkSmoother:
    """Exponential smoothing of one tracked face's landmarks across frames: p_t = a p_(t-1) + (1 - a) x_t.
    The track restarts when the face jumps by more than half its eye distance (a cut, or another person)."""

    def __init__(self, strength: float) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {strength}")
        self.strength, self.previous = strength, None

    def __call__(self, points: np.ndarray) -> np.ndarray:
        if self.previous is not None:
            eyes = five_points(points)[:2]
            eye_dist = np.linalg.norm(eyes[1] - eyes[0])
            if np.linalg.norm(points.mean(0) - self.previous.mean(0)) <= 0.5 * eye_dist:
                points = self.strength * self.previous + (1 - self.strength) * points
        self.previous = points
        return points

    def reset(self) -> None:
        self.previous = None


@dataclass
class VideoSummary:
    frames: int = 0
    frames_without_face: int = 0
    fps: float = 0.0
    audio: bool = False
    faces: FaceCounts = field(default_factory=FaceCounts)

    @property
    def faces_swapped(self) -> int:
        return self.faces.swapped

    def as_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "frames_without_face": self.frames_without_face, "fps": self.fps,
                "audio": self.audio, **self.faces.as_dict()}


def open_video(path: str | Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise ValueError(f"cannot read video {path}: {err}") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path} has no video stream")
    return container


def swap_video(pipeline: FaceSwapPipeline, source: Any, path_in: str | Path, path_out: str | Path,
               batch_size: int = 16, smoothing: float = 0.5, preview: bool = False, progress: bool = True,
               codec: str = "libx264", crf: int = 18) -> VideoSummary:
    """Swap `source` into every frame of `path_in`; write `path_out` (atomically: a temporary file renamed at the
    end). Frames without a face pass through unchanged and are counted. `preview`: original | swap side by side.
    `codec` "libx264rgb" with crf 0 is lossless (tests). One face per frame is smoothed (select != all)."""
    src = None
    if pipeline.uses_source:
        src = source.to(pipeline.device) if isinstance(source, torch.Tensor) else pipeline.face_crop(source)
    smoother = LandmarkSmoother(smoothing) if pipeline.options.select != "all" and smoothing > 0 else None
    path_out = Path(path_out)
    path_out.parent.mkdir(parents=True, exist_ok=True)
    tmp = path_out.with_name(f".{path_out.stem}.tmp{path_out.suffix}")
    summary = VideoSummary()
    with open_video(path_in) as inp:
        video = inp.streams.video[0]
        video.thread_type = "AUTO"
        audio = inp.streams.audio[0] if inp.streams.audio else None
        rate = video.average_rate or video.guessed_rate or 25
        summary.fps, summary.audio = float(rate), audio is not None
        width, height = video.codec_context.width, video.codec_context.height
        with av.open(str(tmp), "w") as out:
            out_video = out.add_stream(codec, rate=rate)
            out_video.width, out_video.height = width * (2 if preview else 1), height
            even = out_video.width % 2 == 0 and height % 2 == 0
            out_video.pix_fmt = "rgb24" if codec == "libx264rgb" else ("yuv420p" if even else "yuv444p")
            out_video.options = {"crf": str(crf)}
            out_audio = out.add_stream_from_template(audio) if audio is not None else None
            bar = tqdm(total=video.frames or None, unit="frame", disable=not progress, desc=Path(path_in).name)
            buffer: list[np.ndarray] = []

            def flush() -> None:
                frames = _swap_batch(pipeline, np.stack(buffer), src, smoother, summary)
                for original, swapped in zip(buffer, frames, strict=True):
                    image = np.concatenate([original, swapped], 1) if preview else swapped
                    out.mux(out_video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), "rgb24")))
                bar.update(len(buffer))
                buffer.clear()

            for packet in inp.demux(*(s for s in (video, audio) if s is not None)):
                if packet.stream.type == "audio":
                    if packet.dts is not None:
                        packet.stream = out_audio
                        out.mux(packet)
                    continue
                for frame in packet.decode():
                    buffer.append(frame.to_ndarray(format="rgb24"))
                    if len(buffer) == batch_size:
                        flush()
            if buffer:
                flush()
            out.mux(out_video.encode(None))
            bar.close()
    os.replace(tmp, path_out)
    return summary


@torch.inference_mode()
def _swap_batch(pipeline: FaceSwapPipeline, frames_np: np.ndarray, source: torch.Tensor | None,
                smoother: LandmarkSmoother | None, summary: VideoSummary) -> np.ndarray:
    frames = from_uint8(torch.from_numpy(frames_np)).to(pipeline.device)
    frame_index, landmarks, counts = pipeline.faces_to_swap(frames_np, frames)
    if smoother is not None:
        by_frame = dict(zip(frame_index.tolist(), landmarks, strict=True))
        for i in range(len(frames_np)):
            if i in by_frame:
                by_frame[i] = smoother(by_frame[i])
            else:
                smoother.reset()
        landmarks = np.stack([by_frame[i] for i in frame_index.tolist()]) if len(frame_index) else landmarks
    out, _ = pipeline.swap_faces(frames, frame_index, landmarks, source)
    summary.frames += len(frames_np)
    summary.faces += counts
    summary.frames_without_face += len(frames_np) - len(set(frame_index.tolist()))
    return to_uint8(out).cpu().numpy()
