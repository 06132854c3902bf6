"""The poll worker: publishes the counts of this node's polls, coalesced, and their closing.

A vote marks its poll (`Poll.tallies_changed_at`, node/polls.py) and wakes this worker after
commit; one run sends one `Update{Question}` per marked poll, however many votes came since
the last run. Its Worker is paced (POLL_PACE): under a stream of votes, a poll's followers get
at most about one Update per pace, not one per vote. A poll that closed is published once
more, closed, when the worker next runs after its closing time (it polls every few seconds).
"""

from __future__ import annotations

from federation.outbox import Outbox
from node import polls
from node.runtime import NodeContext
from node.storage.models import Thread

# Seconds between two runs that each published something: votes in between are coalesced.
POLL_PACE = 2.0
BATCH = 50


class PollPublisher:
    def __init__(self, node: NodeContext, outbox: Outbox) -> None:
        self.node = node
        self.outbox = outbox

    async def drain(self) -> int:
        """Publish every poll due now; how many were published."""
        now = self.node.clock.now()
        async with self.node.transaction() as session:
            due = await polls.polls_to_publish(session, now, BATCH)
            for poll in due:
                thread = await session.get(Thread, poll.thread_id)
                if thread is not None:
                    await self.outbox.poll_counts_changed(session, thread)
                await polls.mark_published(session, poll, now)
        return len(due)
