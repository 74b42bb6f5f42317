"""IOI Circuit Lab: datasets, models, circuit analyses and fine-tuning for the IOI task."""

__version__ = "0.1.0"
