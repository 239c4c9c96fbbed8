"""Reading and writing images with skips that are counted, never crashes on one bad file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    raise FileNotFoundError(f"{path} is neither an image file nor a folder")


def read_rgb(path: str | Path, skipped: Counter | None = None) -> np.ndarray | None:
    """HxWx3 uint8 RGB, or None (counted in `skipped` by reason) when the file cannot be decoded."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        if skipped is None:
            raise
        skipped[f"unreadable image ({type(err).__name__})"] += 1
        return None


def write_rgb(path: str | Path, image: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
