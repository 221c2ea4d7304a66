"""Checkpoint generations (docs/checkpoints.md)."""
