"""What the workers count, for Prometheus: inbox items and deliveries by the outcome each
reached. Counted once their transaction has committed; one registry per process (the web
app's or the worker's, web/metrics.py), never a global one, so that nodes sharing a test
process keep their counts apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

# Inbox items: processed, retried later, or failed for good.
INBOX_OUTCOMES = ("processed", "retry", "failed")
# Deliveries: delivered, retried later, failed for good (refused, unsignable), or abandoned
# (the recipient is gone, the post was deleted, or no answer within the give-up period).
DELIVERY_OUTCOMES = ("delivered", "retry", "failed", "abandoned")


class FederationMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.inbox_items = Counter(
            "healthnode_inbox_items",
            "Incoming activities processed by this process's inbox worker, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "healthnode_deliveries",
            "Delivery attempts recorded by this process's delivery worker, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in INBOX_OUTCOMES:  # every series exists from the start, at zero
            self.inbox_items.labels(outcome)
        for outcome in DELIVERY_OUTCOMES:
            self.deliveries.labels(outcome)

    def count_inbox(self, outcome: str, times: int = 1) -> None:
        if times:
            self.inbox_items.labels(outcome).inc(times)

    def count_delivery(self, outcome: str, times: int = 1) -> None:
        if times:
            self.deliveries.labels(outcome).inc(times)
