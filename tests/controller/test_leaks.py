"""The leak collector's decisions (pure; the passes against a service are in test_service_intent.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.leaks import Suspect, confirmed, judge, plan
from controller.store import Mode, Pod


def allocation(cid: str = "c1", *, uid: str | None = "u1", created_at: float = 0.0, ip: str = "198.18.0.5") -> Pod:
    return Pod(cid, "eth0", "n1", "default", f"pod-{cid}", "default", ip, "02:00:00:00:00:05", Mode.MACVLAN,
               created_at=created_at, uid=uid)


def pod(uid: str) -> dict[str, object]:
    return {"metadata": {"namespace": "default", "name": "pod-c1", "uid": uid}}


def test_judge() -> None:
    assert judge(allocation(), pod("u1")) is None
    assert judge(allocation(), None) == "pod default/pod-c1 is gone"
    assert judge(allocation(), pod("u2")) == "pod default/pod-c1 is another pod now (uid u2; the address was given to uid u1)"


allocations = st.lists(
    st.builds(allocation, cid=st.sampled_from(["a", "b", "c", "d"]), uid=st.sampled_from([None, "u1", "u2"]),
              created_at=st.sampled_from([0.0, 50.0, 100.0]), ip=st.sampled_from(["198.18.0.5", "198.18.0.6"])),
    unique_by=lambda a: a.key,
)


@given(allocations, allocations)
def test_plan_reads_live_only_what_the_last_pass_marked_and_never_the_young_or_uid_less(
    marked: list[Pod], now: list[Pod]
) -> None:
    suspects = {a.key: Suspect(a, "gone") for a in marked}
    todo = plan(suspects, now, now=150.0, grace=60.0)
    judged = [s.pod for s in todo.confirm] + list(todo.check)
    assert sorted(a.key for a in judged) == sorted(a.key for a in now if a.uid is not None and a.created_at <= 90.0)
    for suspect in todo.confirm:  # as it was when marked: the same address, uid and age
        assert _identity(suspect.pod) == _identity(next(a for a in now if a.key == suspect.pod.key))
    for allocation_ in todo.check:  # not marked, or marked as another allocation under the same key
        marked_as = suspects.get(allocation_.key)
        assert marked_as is None or _identity(marked_as.pod) != _identity(allocation_)


def _identity(allocation_: Pod) -> tuple[object, ...]:
    return (allocation_.ip, allocation_.uid, allocation_.created_at)


def test_a_re_added_allocation_is_judged_afresh() -> None:
    old = allocation(ip="198.18.0.5")
    todo = plan({old.key: Suspect(old, "gone")}, [allocation(ip="198.18.0.6")], now=100, grace=60)
    assert (todo.confirm, [a.ip for a in todo.check]) == ((), ["198.18.0.6"])


@given(st.dictionaries(st.sampled_from("abcd"), st.just("r")), st.dictionaries(st.sampled_from("abcd"), st.just("r")))
def test_confirmed_needs_two_passes_in_a_row(previous: dict[str, str], current: dict[str, str]) -> None:
    act, wait = confirmed(previous, current)
    assert set(act) == set(previous) & set(current)
    assert set(wait) == set(current) - set(previous)
