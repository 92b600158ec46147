"""Benchmarks: the ``stream bench`` harness (``benchmarks.harness``), the peer pipelines
written for other frameworks (``benchmarks.peers``) and micro-benchmarks.

A regular package so ``python -m benchmarks.<module>`` and ``import benchmarks.harness``
work from the repository root without installing anything.
"""
