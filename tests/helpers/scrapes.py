"""A daemon's /metrics as the tests read it: every sample by name and
labels, summed over the labels a test does not name."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


class Scrape:
    def __init__(self, samples: Samples) -> None:
        self.samples = samples

    def value(self, name: str, **labels: str) -> float:
        """The sum over every sample of `name` whose labels include these."""
        return sum(
            value
            for (sample, have), value in self.samples.items()
            if sample == name and set(labels.items()) <= set(have)
        )

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


async def scrape_port(port: int) -> Scrape:
    return Scrape(await asyncio.to_thread(_scrape, port))
