"""A /metrics scrape read with prometheus_client's own parser, never matched as text."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(exposition: str) -> Samples:
    """Return every sample of an exposition by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(exposition) for s in family.samples}


def fetch(url: str) -> Samples:
    """Scrape `url` (a /metrics endpoint on 127.0.0.1) and parse it."""
    answer = requests.get(url, timeout=5)
    answer.raise_for_status()
    return parse(answer.text)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """Return the value of the sample of `name` with exactly `labels`, or None when there is none."""
    return samples.get((name, tuple(sorted(labels.items()))))


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum the samples of `name` whose labels include `labels`."""
    return sum(value for (found, keys), value in samples.items()
               if found == name and set(labels.items()) <= set(keys))


def values(samples: Samples, name: str, **labels: str) -> list[float]:
    """Return the value of every sample of `name` whose labels include `labels`."""
    return [value for (found, keys), value in samples.items() if found == name and set(labels.items()) <= set(keys)]
