"""Training: configuration, samples, losses, the loop and what a run writes."""

from fetalhead.training.config import TrainConfig
from fetalhead.training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
