"""Run folders and what reads them: layout, checkpoints, ensemble members, device and precision.

Training writes runs; evaluation, inference and the Python API read them through this layer."""
