"""Reading an exposition back: what tests, the dashboard check and the CLI compare."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(url: str, timeout_s: float = 5.0) -> dict[Sample, float]:
    """``(sample name, sorted labels)`` -> value of every sample at ``url``."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode()
    return parse(text)


def parse(text: str) -> dict[Sample, float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Sample, float], name: str, **labels: str) -> float | None:
    """The one sample named ``name`` whose labels include ``labels``, or None."""
    found = [
        v
        for (sample, sample_labels), v in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    ]
    if len(found) > 1:
        raise ValueError(f"{name} {labels}: {len(found)} samples, expected one")
    return found[0] if found else None
