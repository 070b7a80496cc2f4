"""Reconcile: the flow-mods that turn what a switch has into what we want, and nothing more.

A flow is replaced in place when only its instructions change (an OpenFlow add with the same table,
priority and match overwrites it), so no moment passes without it. Adds go in pipeline order, allow
flows before what redirects traffic to them (make-before-break); deletes go in the reverse order.

The table `seen` is the switch's own (records it learns, under another tag than ours): a flow found
there is never deleted, whatever cookie it carries (records an older version learned under our tag).
So is a flow whose cookie alone changed (an upgrade from flows carrying the bare configured cookie):
the add replaces it in place.
"""

from __future__ import annotations

from collections.abc import Iterable

from openflow.cookies import tag_of
from openflow.flows import Flow
from openflow.tables import SEEN


def diff(current: Iterable[Flow], desired: Iterable[Flow]) -> tuple[tuple[Flow, ...], tuple[Flow, ...]]:
    """(to_delete, to_add): delete-strict each of the first, then add each of the second."""
    have, want = frozenset(flow for flow in current if flow.table != SEEN), frozenset(desired)
    to_add = tuple(sorted(want - have, key=Flow.pipeline_order))
    replaced = {flow.key for flow in to_add}
    to_delete = sorted((flow for flow in have - want if flow.key not in replaced), key=Flow.pipeline_order)
    return tuple(reversed(to_delete)), to_add


def apply(current: Iterable[Flow], to_delete: Iterable[Flow], to_add: Iterable[Flow]) -> frozenset[Flow]:
    """What a switch holds after the flow-mods, by OpenFlow's rules: a strict delete removes the flow
    with that key under the same tag (`cookies.TAG_MASK`); an add replaces any flow with its key.
    (A model for tests and dry runs.)"""
    table = {flow.key: flow for flow in current}
    for flow in to_delete:
        if flow.key in table and tag_of(table[flow.key].cookie) == tag_of(flow.cookie):
            del table[flow.key]
    for flow in to_add:
        table[flow.key] = flow
    return frozenset(table.values())
