"""Preprocessing raw photos and videos into an aligned face store (`swaplab.data.store`): detect, (dlib 68
landmarks,) align, crop, (parse,) write shards; re-runs resume.

- `options`: `PreprocessOptions`, the keys of conf/preprocess.yaml and their start-up check.
- `inputs`: listing images and videos, planning work items, decoding them in DataLoader workers.
- `extraction`: `FaceExtractor` (detection batches -> face crops, manifest fields, parsing labels) and `Unit`.
- `shards`: store metadata, done units and totals of an existing store, `ShardSink` (units -> shards).
- `preprocessor`: `Preprocessor(detector, opts, landmarks, parser).run(input, output) -> summary`.
"""

from swaplab.preprocessing.options import PreprocessOptions
from swaplab.preprocessing.preprocessor import Preprocessor

__all__ = ["PreprocessOptions", "Preprocessor"]
