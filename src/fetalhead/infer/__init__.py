"""Inference: preprocessing and the backends that turn images into probability maps."""
