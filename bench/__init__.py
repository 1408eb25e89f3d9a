"""Benchmarks for vaecodec (not tests: they measure, they do not assert)."""
