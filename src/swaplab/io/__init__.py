"""Files in and out: images, videos (PyAV), checkpoints (atomic writes, tensors-only reads)."""
