"""Benchmark scripts (run them as `python benchmarks/<name>.py`); a package so they share `rounds`."""
