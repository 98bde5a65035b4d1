"""Benchmark suites run by ``hpccloud bench TARGET``."""
