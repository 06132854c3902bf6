"""People, groups and posts of other servers as this node keeps them, one module a job:
actors (remote actor records), following (follows and bans across servers), post_refs (posts by
their remote ids), audience (who a change federates to), deletions (posts deleted before they
arrived), erasure (accounts deleted at home)."""

from __future__ import annotations

from node.remote.actors import (
    RemoteActorFacts,
    group_by_iri,
    member_by_iri,
    members_by_iri,
    upsert_remote_group,
    upsert_remote_member,
)
from node.remote.audience import (
    delivery_inbox,
    has_local_members,
    readers_of_member,
    remote_followers_inboxes,
    remote_group_inboxes_of,
    shared_inboxes_of,
)
from node.remote.deletions import (
    TOMBSTONES_KEPT,
    deleters_among,
    expired_deletions,
    remember_deleted,
    was_deleted,
)
from node.remote.erasure import erase_remote_account
from node.remote.following import (
    accept_remote_follow,
    banned_by_remote_group,
    end_remote_follow,
    follow_answered,
    inbox_gone,
    local_group_by_iri_path,
    local_groups_by_slug,
    member_by_follow,
    set_follow_activity,
    unbanned_by_remote_group,
)
from node.remote.post_refs import (
    PostRef,
    PostRefs,
    post_by_ap_id,
    post_ref,
    post_refs,
    reaction_by_activity,
)

__all__ = [
    "TOMBSTONES_KEPT",
    "PostRef",
    "PostRefs",
    "RemoteActorFacts",
    "accept_remote_follow",
    "banned_by_remote_group",
    "deleters_among",
    "delivery_inbox",
    "end_remote_follow",
    "erase_remote_account",
    "expired_deletions",
    "follow_answered",
    "group_by_iri",
    "has_local_members",
    "inbox_gone",
    "local_group_by_iri_path",
    "local_groups_by_slug",
    "member_by_follow",
    "member_by_iri",
    "members_by_iri",
    "post_by_ap_id",
    "post_ref",
    "post_refs",
    "reaction_by_activity",
    "readers_of_member",
    "remember_deleted",
    "remote_followers_inboxes",
    "remote_group_inboxes_of",
    "set_follow_activity",
    "shared_inboxes_of",
    "unbanned_by_remote_group",
    "upsert_remote_group",
    "upsert_remote_member",
    "was_deleted",
]
