"""Benchmarks that ship with the package (`joulepath bench ...`); `benchmarks/*.py` are thin wrappers."""
