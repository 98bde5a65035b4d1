"""Measured models: links (Hockney α, β per rank pair) and compute speeds (units/s per rank)."""

from hpccloud.measure.links import LinkModel, hockney_fit
from hpccloud.measure.speed import SpeedModel

__all__ = ["LinkModel", "SpeedModel", "hockney_fit"]
