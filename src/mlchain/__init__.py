"""mlchain: push training code, get a trained, gated, tracked and announced model."""

__version__ = "0.1.0"
