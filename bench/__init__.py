"""Benchmarks: programs that print ratios against a baseline measured in the same run.

Run them with ``python -m bench`` (``--quick`` for a smoke run). They are never timed
assertions in the test suite.
"""
