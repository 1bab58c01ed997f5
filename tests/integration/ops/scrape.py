"""Reading a /metrics page the way Prometheus does (prometheus_client's own parser)."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

# The fleet's figures: the same from whichever instance answers (the time-dependent ones are compared apart).
FLEET_COUNTS = ("sprout_jobs", "sprout_queue_depth", "sprout_items", "sprout_workers", "sprout_schedules")


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))

    def value(self, name: str, default: float | None = None, **labels: str) -> float:
        """The one sample of `name` with exactly these labels (among others it may have)."""
        found = [
            v for got, v in self.samples.get(name, []) if all(got.get(k) == w for k, w in labels.items())
        ]
        if not found:
            if default is not None:
                return default
            raise AssertionError(f"no sample {name}{labels} in:\n{self.text[:3000]}")
        assert len(found) == 1, f"{name}{labels}: {found}"
        return found[0]

    def series(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(labels.items())): value for labels, value in self.samples.get(name, [])}

    def by(self, name: str, label: str, **where: str) -> dict[str, float]:
        return {
            labels[label]: value
            for labels, value in self.samples.get(name, [])
            if all(labels.get(k) == w for k, w in where.items())
        }


def scrape(client: httpx.Client | Any, url: str = "/metrics") -> Scrape:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return Scrape(response.text)


def fleet_counts(page: Scrape) -> dict[str, Any]:
    return {name: page.series(name) for name in FLEET_COUNTS}
