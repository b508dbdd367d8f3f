"""Shared core: models, data, bundles and the tensor codec. Imports nothing from server/edge/rl."""
