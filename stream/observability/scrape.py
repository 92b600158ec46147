"""Read a worker's ``/metrics`` into plain numbers (demo summary, benchmarks, tests)."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Sample:
    """Samples of one scrape, summed over whatever labels the caller does not name."""

    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def total(self, name: str, **labels: str) -> float:
        wanted = set(labels.items())
        return sum(v for (n, lbls), v in self.values.items() if n == name and wanted <= set(lbls))

    def merge(self, other: Sample) -> Sample:
        merged = dict(self.values)
        for key, value in other.values.items():
            merged[key] = merged.get(key, 0.0) + value
        return Sample(merged)


def parse_metrics(text: str) -> Sample:
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return Sample(values)


def scrape(url: str, timeout: float = 2.0) -> Sample | None:
    """Scrape ``url``; None when the worker is not answering (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse_metrics(response.read().decode())
    except OSError:
        return None
