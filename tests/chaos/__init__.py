"""Chaos tests: real workers, real brokers, faults injected mid-run (see conftest.py)."""
