"""The healthnode domain: members, condition groups, threads, membership and policy.

Nothing here knows about HTTP or ActivityStreams.
"""
