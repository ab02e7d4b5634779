"""Benchmarks (not part of the cw package)."""
