"""``fsx-stage agent``: the per-node root service that flushes a running job's
checkpoints on request (``fsx-stage checkpoint``); docs/checkpoints.md."""
