"""Stage 1: the negative filter that removes obvious negatives before the network."""

from landslide.filter.negative import KeepAll, NegativeFilter, load_filter

__all__ = ["KeepAll", "NegativeFilter", "load_filter"]
