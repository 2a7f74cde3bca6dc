"""Prediction on photos and videos as a pipeline: inputs -> faces -> model -> results (and pictures)."""

from ran.pipeline.pipeline import FacePrediction, InputResult, predict

__all__ = ["FacePrediction", "InputResult", "predict"]
