"""Read what a service says about itself: its Prometheus metrics, as text over HTTP.

Works on any service that exposes /metrics, so the fault suite can judge the naive baseline
with the same code.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


class MetricsSnapshot:
    """One scrape of /metrics; `value(name, **labels)` sums the matching samples (0 if none)."""

    def __init__(self, text: str) -> None:
        self.samples = [
            sample
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == name
            and all(sample.labels.get(key) == want for key, want in labels.items())
        )
