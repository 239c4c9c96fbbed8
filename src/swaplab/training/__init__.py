"""What a training run adds to a model: callbacks, the DDP strategy, loggers."""
