"""The declared state graphs of rows that move through states: deliveries, incoming items and
memberships. One declaration each: the states, the transitions allowed between them, how long
a state waits before its work is tried again, and how long a finished row is kept.

Every write of a state goes through its graph: ORM attribute sets are checked as they happen
(models.py), set-based UPDATEs are built by `StateGraph.update`, which refuses an illegal
transition before any SQL runs; the tables' CHECK constraints and the diagrams in
docs/FEDERATION.md are generated from the same declarations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Delete, Update, and_, delete, or_, update

S = TypeVar("S", bound=StrEnum)

GONE = "(none)"  # the row does not exist: before it is created, after it is deleted


class IllegalTransition(ValueError):
    """A write that the state graph does not allow: a programming error, never user input."""


@dataclass(frozen=True)
class Backoff:
    """Attempts that fail wait `first`, then twice as long each time up to `longest`, with
    jitter; a row still failing `give_up_after` its creation ends."""

    first: timedelta
    longest: timedelta
    give_up_after: timedelta


@dataclass(frozen=True)
class StateGraph(Generic[S]):
    name: str
    states: type[S]
    # Where a new row may start, and which states may follow each state.
    initial: frozenset[S]
    transitions: Mapping[S, frozenset[S]]
    # States whose row may be deleted (leaving a group, pruning).
    deletable: frozenset[S] = frozenset()
    backoff: Mapping[S, Backoff] = field(default_factory=dict)
    lease: Mapping[S, timedelta] = field(default_factory=dict)
    retention: Mapping[S, timedelta] = field(default_factory=dict)

    def __post_init__(self) -> None:
        named = set(self.states)
        mentioned = set(self.initial) | set(self.transitions) | set(self.deletable)
        for targets in self.transitions.values():
            mentioned |= targets
        if not mentioned <= named:
            raise IllegalTransition(f"{self.name}: unknown states {mentioned - named}")

    def allows(self, old: S | str | None, new: S | str) -> bool:
        target = self.states(new)
        if old is None:
            return target in self.initial
        source = self.states(old)
        return source == target or target in self.transitions.get(source, frozenset())

    def check(self, old: S | str | None, new: S | str) -> str:
        """The new state as stored, or IllegalTransition."""
        try:
            if self.allows(old, new):
                return str(self.states(new).value)
        except ValueError:
            pass
        raise IllegalTransition(f"{self.name}: {old or GONE} -> {new} is not a transition")

    def check_delete(self, old: S | str) -> None:
        if self.states(old) not in self.deletable:
            raise IllegalTransition(f"{self.name}: a row in state {old} may not be deleted")

    def update(self, model: Any, sources: Iterable[S], target: S, **values: Any) -> Update:
        """UPDATE rows of `model` from any of `sources` to `target`: rows in another state are
        left alone (the WHERE clause says so), and an illegal pair raises before any SQL."""
        sources = tuple(sources)
        for source in sources:
            self.check(source, target)
        return (
            update(model)
            .where(model.state.in_([source.value for source in sources]))
            .values(state=target.value, **values)
        )

    def prune(self, model: Any, finished_at: ColumnElement[Any], now: Any) -> Delete:
        """DELETE the rows whose finished state's retention has passed since `finished_at`."""
        return delete(model).where(
            or_(
                *(
                    and_(model.state == state.value, finished_at < now - self.retention[state])
                    for state in self.finished()
                )
            )
        )

    def check_constraint(self, column: str = "state") -> str:
        quoted = ", ".join(f"'{state.value}'" for state in self.states)
        return f"{column} IN ({quoted})"

    def finished(self) -> tuple[S, ...]:
        """States kept only for their retention period, then pruned."""
        return tuple(state for state in self.states if state in self.retention)

    def mermaid(self) -> str:
        """The graph as a Mermaid state diagram, with each state's timing as a note."""
        lines = ["stateDiagram-v2"]
        for state in sorted(self.initial, key=list(self.states).index):
            lines.append(f"    [*] --> {state.value}")
        for source in self.states:
            for target in sorted(self.transitions.get(source, ()), key=list(self.states).index):
                lines.append(f"    {source.value} --> {target.value}")
        for state in self.states:
            if state in self.deletable:
                lines.append(f"    {state.value} --> [*]")
        for state in self.states:
            note = self._timing(state)
            if note:
                lines.append(f"    note right of {state.value}: {note}")
        return "\n".join(lines)

    def _timing(self, state: S) -> str:
        parts = []
        if state in self.backoff:
            backoff = self.backoff[state]
            parts.append(
                f"retried after {_span(backoff.first)} doubling to {_span(backoff.longest)},"
                f" ends after {_span(backoff.give_up_after)}"
            )
        if state in self.lease:
            parts.append(f"leased for {_span(self.lease[state])}, then claimable again")
        if state in self.retention:
            parts.append(f"pruned after {_span(self.retention[state])}")
        return "; ".join(parts)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} s"


RETRIES = Backoff(
    first=timedelta(minutes=1), longest=timedelta(days=1), give_up_after=timedelta(days=3)
)
LEASE = timedelta(minutes=2)
KEPT = timedelta(days=7)
FAILED_ITEMS_KEPT = timedelta(days=30)  # failed incoming items stay visible to admins longer


class DeliveryState(StrEnum):
    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    FAILED = "failed"  # refused for good; the reason is kept
    ABANDONED = "abandoned"  # the recipient is gone, the post was deleted, or retried too long


_D = DeliveryState
DELIVERY = StateGraph(
    name="delivery",
    states=DeliveryState,
    initial=frozenset({_D.QUEUED}),
    transitions={
        # A queued delivery whose post is deleted is never sent.
        _D.QUEUED: frozenset({_D.IN_FLIGHT, _D.ABANDONED}),
        _D.IN_FLIGHT: frozenset({_D.QUEUED, _D.DELIVERED, _D.FAILED, _D.ABANDONED}),
    },
    deletable=frozenset({_D.DELIVERED, _D.FAILED, _D.ABANDONED}),
    backoff={_D.QUEUED: RETRIES},
    lease={_D.IN_FLIGHT: LEASE},
    retention={_D.DELIVERED: KEPT, _D.FAILED: KEPT, _D.ABANDONED: KEPT},
)


class InboxItemState(StrEnum):
    QUEUED = "queued"
    DONE = "done"
    FAILED = "failed"


_I = InboxItemState
INBOX_ITEM = StateGraph(
    name="inbox item",
    states=InboxItemState,
    initial=frozenset({_I.QUEUED}),
    transitions={
        _I.QUEUED: frozenset({_I.DONE, _I.FAILED}),
        _I.FAILED: frozenset({_I.QUEUED}),  # an admin's retry
    },
    deletable=frozenset({_I.DONE, _I.FAILED}),
    backoff={_I.QUEUED: RETRIES},
    retention={_I.DONE: KEPT, _I.FAILED: FAILED_ITEMS_KEPT},
)


class MembershipState(StrEnum):
    INVITED = "invited"
    PENDING = "pending"  # asked to join, or followed a remote group that has not answered
    ACTIVE = "active"
    BANNED = "banned"


_M = MembershipState
MEMBERSHIP = StateGraph(
    name="membership",
    states=MembershipState,
    initial=frozenset({_M.INVITED, _M.PENDING, _M.ACTIVE, _M.BANNED}),
    transitions={
        # An invitation to a group on another server is taken up by following it.
        _M.INVITED: frozenset({_M.ACTIVE, _M.PENDING, _M.BANNED}),
        _M.PENDING: frozenset({_M.ACTIVE, _M.BANNED}),
        _M.ACTIVE: frozenset({_M.BANNED}),
    },
    # Leaving, a declined request or invitation, an unfollow, a lifted ban: the row goes.
    deletable=frozenset({_M.INVITED, _M.PENDING, _M.ACTIVE, _M.BANNED}),
)

GRAPHS: tuple[StateGraph[Any], ...] = (DELIVERY, INBOX_ITEM, MEMBERSHIP)


def markdown(graph: StateGraph[Any]) -> str:
    """The block docs/FEDERATION.md shows for `graph` (a test holds the two equal)."""
    return f"<!-- state graph: {graph.name} -->\n```mermaid\n{graph.mermaid()}\n```"


if __name__ == "__main__":  # python -m node.storage.states: the blocks to paste into the docs
    print("\n\n".join(markdown(graph) for graph in GRAPHS))
