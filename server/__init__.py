"""Coordinator, DeViT decomposition and split-point training."""
