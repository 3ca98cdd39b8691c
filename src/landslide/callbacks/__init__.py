"""Lightning callbacks that Lightning itself lacks: energy measurement and a per-epoch metric history."""

from landslide.callbacks.energy import EnergyCallback, EnergyTracker
from landslide.callbacks.history import MetricHistory
from landslide.callbacks.resume import ResumeState

__all__ = ["EnergyCallback", "EnergyTracker", "MetricHistory", "ResumeState"]
