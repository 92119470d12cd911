"""Prometheus metrics of the service, fed from the usage ledger (every generation passes there
exactly once, whatever its outcome). Labels are model, provider, kind and status: never a key,
a secret or an id."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from raven_service.core.types import UsageRecord

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _HeapCollector(Collector):
    """``raven_gc_frozen_objects``: the objects `server.settle_heap` took out of the collector's
    view once serving (0 before, or in a process that serves inside a test)."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("raven_gc_frozen_objects", "Objects frozen out of garbage collection at start-up.",
                                value=gc.get_freeze_count())


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        GCCollector(registry=self.registry)  # python_gc_*: collections and objects by generation
        self.registry.register(_HeapCollector())
        labels = ("kind", "model", "provider", "status")
        self.generations = Counter("raven_generations", "Generations by outcome (usage records written).",
                                   labels, registry=self.registry)
        self.tokens = Counter("raven_tokens", "Tokens processed.", ("model", "provider", "direction"),
                              registry=self.registry)
        self.cost = Counter("raven_cost_credits", "Credits charged.", ("model", "provider"), registry=self.registry)
        self.attempts = Counter("raven_upstream_attempts", "Upstream attempts by outcome (retries and fallbacks).",
                                ("route", "outcome"), registry=self.registry)
        self.latency = Histogram("raven_generation_latency_seconds", "Admission to end of a generation.",
                                 ("kind", "provider"), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.overspend_total = Counter("raven_credit_overspend_credits",
                                       "Credits charged beyond a request's hold (a low prompt estimate); "
                                       "charged in full, never clamped.",
                                 registry=self.registry)
        self.ttft = Histogram("raven_time_to_first_token_seconds", "Admission to the first token (chat).",
                              ("provider",), buckets=_LATENCY_BUCKETS, registry=self.registry)
        # Label children by label values (bounded: configured models, providers, kinds, statuses).
        self._children: dict[tuple[str, str, str, str], tuple[Any, ...]] = {}
        self._attempts: dict[str, Any] = {}

    def overspend(self, amount: Decimal) -> None:
        self.overspend_total.inc(float(amount))

    def observe(self, rec: UsageRecord) -> None:
        provider = rec.provider or "none"
        key = (rec.kind, rec.model, provider, rec.status)
        children = self._children.get(key)
        if children is None:  # labels() takes a lock and builds a tuple: once per label set, not per record
            children = self._children[key] = (
                self.generations.labels(rec.kind, rec.model, provider, rec.status),
                self.tokens.labels(rec.model, provider, "prompt"),
                self.tokens.labels(rec.model, provider, "completion"),
                self.cost.labels(rec.model, provider),
                self.latency.labels(rec.kind, provider),
                self.ttft.labels(provider),
            )
        generations, prompt, completion, cost, latency, ttft = children
        generations.inc()
        if rec.prompt_tokens:
            prompt.inc(rec.prompt_tokens)
        if rec.completion_tokens:
            completion.inc(rec.completion_tokens)
        if rec.cost:
            cost.inc(float(rec.cost))
        for attempt in rec.attempts:
            child = self._attempts.get(attempt)
            if child is None:
                route, _, outcome = attempt.rpartition(":")
                child = self._attempts[attempt] = self.attempts.labels(route, outcome)
            child.inc()
        latency.observe(rec.latency_ms / 1000)
        if rec.ttft_ms:
            ttft.observe(rec.ttft_ms / 1000)
