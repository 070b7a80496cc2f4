"""openflow.diff: exact, idempotent, per-placement, make-before-break. Properties over random states."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ofstates import COOKIE, PORTS, node_mac, placements, states, two_node_state

from openflow.diff import apply, diff
from openflow.flows import Flow
from openflow.model import Placement, SwitchState, UnknownDestination
from openflow.pipeline import DesiredFlows, StateError, desired_flows
from openflow.tables import TABLES


@given(states, states)
def test_applying_the_diff_gives_the_desired_flows(a: SwitchState, b: SwitchState) -> None:
    current, desired = desired_flows(a), desired_flows(b)
    assert apply(current, *diff(current, desired)) == desired


@given(states)
def test_diff_of_a_state_with_itself_is_empty(x: SwitchState) -> None:
    assert diff(desired_flows(x), desired_flows(x)) == ((), ())


@given(states, st.data())
def test_moving_one_pod_changes_only_its_flows(state: SwitchState, data: st.DataObject) -> None:
    """A pod: its placements (one per family, one MAC) move together."""
    if not state.placements:
        return
    owner = data.draw(st.sampled_from(state.placements)).owner
    moved = [p for p in state.placements if p.owner == owner]
    port = moved[0].port
    ipvlan = moved[0].mac == node_mac(port)
    to_port = data.draw(st.sampled_from([p for p in PORTS if p != port]))
    mac = node_mac(to_port) if ipvlan else moved[0].mac
    after = replace(state, placements=tuple(
        replace(p, port=to_port, mac=mac) if p.owner == owner else p for p in state.placements))
    to_delete, to_add = diff(desired_flows(state), desired_flows(after))
    names = {*(p.ip for p in moved), moved[0].mac, mac}
    for flow in (*to_delete, *to_add):
        assert names & _mentioned(flow), f"{flow} changed but names none of {names}"


@given(states, states)
def test_adds_go_in_pipeline_order_and_deletes_in_reverse(a: SwitchState, b: SwitchState) -> None:
    to_delete, to_add = diff(desired_flows(a), desired_flows(b))
    assert _table_ids(to_add) == sorted(_table_ids(to_add))
    assert _table_ids(to_delete) == sorted(_table_ids(to_delete), reverse=True)


def test_new_placement_is_allowed_in_before_it_is_answered_or_forwarded() -> None:
    state = two_node_state()
    grown = replace(state, placements=(*state.placements, Placement("198.18.0.13", "02:00:c6:12:01:13", 1)))
    _, to_add = diff(desired_flows(state), desired_flows(grown))
    assert [flow.table for flow in to_add] == ["ingress"] * 3 + ["responder"] * 2 + ["l2"]
    assert len({flow.key for flow in to_add}) == len(to_add)


def test_changed_instructions_are_replaced_in_place_not_deleted() -> None:
    before = desired_flows(two_node_state())
    after = desired_flows(two_node_state(unknown_destination=UnknownDestination.DROP))
    to_delete, to_add = diff(before, after)
    assert to_delete == ()
    assert [(flow.table, flow.priority, flow.actions) for flow in to_add] == [("l2", 0, ())]


def _mentioned(flow: Flow) -> set[str]:
    values = {str(value) for _, value in flow.match}
    return values | {str(getattr(action, "value", "")) for action in flow.actions}


def _table_ids(flows: tuple[Flow, ...]) -> list[int]:
    return [TABLES[flow.table] for flow in flows]


@given(st.lists(states, min_size=1, max_size=6))
def test_desired_flows_kept_across_states_equal_a_rebuild(sequence):
    tracker = DesiredFlows()
    before: frozenset = frozenset()
    for state in sequence:
        try:
            expected = desired_flows(state)
        except StateError:
            with pytest.raises(StateError):
                tracker.update(state)
            tracker = DesiredFlows()
            before = frozenset()
            continue
        appeared, vanished = tracker.update(state)
        assert tracker.flows == expected
        assert (appeared, vanished) == (expected - before, before - expected)
        before = expected


@given(states, st.lists(placements, min_size=1, max_size=8))
def test_desired_flows_follow_placement_changes_incrementally(base, placement_sets):
    tracker = DesiredFlows()
    tracker.update(base)
    for chosen in placement_sets:
        state = replace(base, placements=chosen)
        before = tracker.flows
        appeared, vanished = tracker.update(state)
        assert tracker.flows == desired_flows(state)
        assert (appeared, vanished) == (tracker.flows - before, before - tracker.flows)


def test_a_clash_is_refused_and_the_next_update_rebuilds():
    state = two_node_state()
    tracker = DesiredFlows()
    tracker.update(state)
    clash = replace(state, placements=(*state.placements, Placement("198.18.0.11", node_mac(3), 3, "x/y")))
    with pytest.raises(StateError):
        tracker.update(clash)
    assert tracker.update(state)[1] == frozenset() and tracker.flows == desired_flows(state)


# upgrade from flows carrying the bare configured cookie ------------------------------------------
@given(states)
def test_an_upgrade_from_exact_cookie_flows_replaces_in_place_once(state: SwitchState) -> None:
    """An older controller stamped every flow with the configured cookie: each is overwritten by
    an add (same key), none deleted, and the next diff is empty."""
    desired = desired_flows(state)
    old = frozenset(flow.with_cookie(state.cookie) for flow in desired)
    to_delete, to_add = diff(old, desired)
    assert to_delete == () and {flow.key for flow in to_add} == {flow.key for flow in old - desired}
    assert diff(apply(old, to_delete, to_add), desired) == ((), ())


def test_records_in_seen_are_never_deleted_whatever_their_cookie() -> None:
    desired = desired_flows(two_node_state())
    # under our tag: what an older version learned
    record = Flow("seen", 0, (("in_port", 9), ("eth_src", "02:00:c6:12:00:fe")), cookie=COOKIE ^ 0x5EE0)
    assert diff({*desired, record}, desired) == ((), ())
