"""The supervisor's admin app's merge of the workers' metrics (admin/workers.py), on
expositions made by prometheus-client itself. The app as a whole runs in
tests/test_workers.py, against real workers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mcpfast.admin.workers import merge_expositions


def exposition(calls: int, open_: int, latencies: list[float]) -> str:
    registry = CollectorRegistry()
    counter = Counter("demo_calls", "Calls.", ["tool"], registry=registry)
    counter.labels("echo").inc(calls)
    Gauge("demo_open", "Open.", registry=registry).set(open_)
    histogram = Histogram("demo_seconds", "Latency.", buckets=(0.1, 1.0), registry=registry)
    for latency in latencies:
        histogram.observe(latency)
    return generate_latest(registry).decode()


def test_samples_keep_their_values_and_gain_the_worker_label() -> None:
    registry = CollectorRegistry()

    class Merged:
        def collect(self) -> list:  # type: ignore[type-arg]
            return merge_expositions([("0", exposition(3, 1, [0.05])),
                                      ("1", exposition(4, 2, [0.5, 2.0]))])
    registry.register(Merged())
    text = generate_latest(registry).decode()
    helps = [line for line in text.splitlines() if line.startswith("# HELP demo_calls_total")]
    assert len(helps) == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    calls = {s.labels["worker"]: s.value for s in families["demo_calls"].samples
             if s.name == "demo_calls_total"}
    assert calls == {"0": 3.0, "1": 4.0}
    assert all(s.labels["tool"] == "echo" for s in families["demo_calls"].samples)
    assert {s.labels["worker"]: s.value for s in families["demo_open"].samples} == \
        {"0": 1.0, "1": 2.0}
    counts = {s.labels["worker"]: s.value for s in families["demo_seconds"].samples
              if s.name == "demo_seconds_count"}
    assert counts == {"0": 1.0, "1": 2.0}
    inf = {s.labels["worker"]: s.value for s in families["demo_seconds"].samples
           if s.name == "demo_seconds_bucket" and s.labels["le"] == "+Inf"}
    assert inf == {"0": 1.0, "1": 2.0}
