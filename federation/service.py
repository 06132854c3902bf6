"""Federation for one node: the client, the actor directory, the outbox sink and the workers."""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from federation.actors import ActorDirectory
from federation.client import FederationClient
from federation.convert import Documents
from federation.inbox import InboxWriter, KnownAddressees
from federation.inbox_budget import InboxBudget
from federation.metrics import FederationMetrics
from federation.outbox import Outbox
from federation.polls import BATCH as POLL_BATCH
from federation.polls import POLL_PACE, PollPublisher
from federation.prefetch import Prefetcher
from federation.processing import Processor
from federation.queue import DeliveryQueue, Housekeeping, InboxQueue, Worker
from federation.replies import CLAIM
from node.runtime import NodeContext

# Under a steady stream, a partial batch is followed by the next one this long after it
# began (federation/queue.py, Worker): each batch then carries many rows, and the fixed cost
# of its transaction and statements is shared by all of them.
INBOX_PACE = 0.1
DELIVERY_PACE = 0.05


class Federation:
    def __init__(
        self,
        node: NodeContext,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        metrics: FederationMetrics | None = None,
    ) -> None:
        self.node = node
        self.metrics = metrics or FederationMetrics()
        self.documents = Documents(node.settings)
        self.client = FederationClient(
            allow_loopback=node.settings.is_development,
            trace_configs=trace_configs,
            permits=self.permits,
        )
        self.directory = ActorDirectory(
            self.client,
            node.secret,
            self.documents.iris,
            node.transaction,
        )
        self.delivery_queue = DeliveryQueue(node, self.client, self.directory, metrics=self.metrics)
        self.delivery_worker = Worker(
            "deliveries", self.delivery_queue.drain, DELIVERY_PACE, self.delivery_queue.batch
        )
        self.outbox = Outbox(
            self.documents, node.clock, self.delivery_worker.wake, node.federation_policy
        )
        processor = Processor(
            self.documents,
            self.directory,
            self.outbox,
            node.settings.limits,
            blocked=lambda iri: not node.federation_policy.latest.permits(iri),
        )
        prefetcher = Prefetcher(self.directory, processor.fetched, node.transaction)
        self.inbox_queue = InboxQueue(node, processor, prefetcher, metrics=self.metrics)
        self.inbox_worker = Worker("inbox", self.inbox_queue.drain, INBOX_PACE, CLAIM)
        self.poll_publisher = PollPublisher(node, self.outbox)
        self.poll_worker = Worker("polls", self.poll_publisher.drain, POLL_PACE, POLL_BATCH)
        self.outbox.wake_polls = self.poll_worker.wake
        self.housekeeping = Housekeeping(node)
        self.housekeeping_worker = Worker("housekeeping", self.housekeeping.drain)
        self.addressees = KnownAddressees()
        self.inbox_budget = InboxBudget(node.settings.limits.rates.inbox_per_host)
        self.inbox_writer = InboxWriter(
            node.transaction, node.engine.dialect.name, self.inbox_worker.wake
        )
        node.sinks.append(self.outbox)
        self.workers_running = False

    async def permits(self, iri: str) -> bool:
        """Whether the federation policy lets this node talk to the server of `iri`."""
        return (await self.node.federation_policy.current()).permits(iri)

    def workers_alive(self) -> bool:
        """Whether every worker this process started is still running."""
        workers = (self.inbox_worker, self.delivery_worker, self.housekeeping_worker)
        return all(worker.running for worker in workers)

    def start_workers(self) -> None:
        self.inbox_worker.start()
        self.delivery_worker.start()
        self.housekeeping_worker.start()
        self.poll_worker.start()
        self.workers_running = True

    async def close(self) -> None:
        await self.inbox_writer.close()
        if self.workers_running:
            await self.inbox_worker.stop()
            await self.delivery_worker.stop()
            await self.housekeeping_worker.stop()
            await self.poll_worker.stop()
        if self.outbox in self.node.sinks:
            self.node.sinks.remove(self.outbox)
        await self.client.close()
