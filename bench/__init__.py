"""Benchmarks of the hub against plain baselines, measured side by side in one run (`python -m bench`)."""
