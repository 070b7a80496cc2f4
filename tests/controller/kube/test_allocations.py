"""IPAllocation objects <-> what the store keeps about an address (pure)."""

from __future__ import annotations

from dataclasses import replace

from controller.kube.allocations import Phase, Slot, from_object, seconds, timestamp, to_object
from controller.store import Mode, Pod

POD = Pod("c1", "eth0", "n1", "default", "web-0", "web", "198.18.0.5", "02:55:c6:12:00:05", Mode.IPVLAN,
          "default/web-0@u1", created_at=1700000000.123456)  # fmt: skip


def test_each_phase_round_trips() -> None:
    for slot in (Slot(Phase.BOUND, "web", POD, POD.sticky), Slot(Phase.RESERVED, "web", POD, POD.sticky, 1700000100.5),
                 Slot(Phase.COOLDOWN, "web", replace(POD, sticky=None), None, 1700000100.5),
                 Slot(Phase.RESERVED, "", None, "k", None)):  # fmt: skip
        obj = to_object("198.18.0.5", slot)
        assert obj["metadata"] == {"name": "198.18.0.5", "labels": {"underlay.io/pool": slot.pool}}
        assert from_object(obj) == ("198.18.0.5", slot)
    assert from_object(to_object("198.18.0.5", Slot(Phase.BOUND, "web", POD)))[1].pod.created_at == POD.created_at  # type: ignore[union-attr]


def test_what_a_user_reads() -> None:
    obj = to_object("198.18.0.5", Slot(Phase.COOLDOWN, "web", POD, None, 1700000100.5), resource_version="42")
    assert obj["spec"] == {"address": "198.18.0.5", "pool": "web", "pod": {"namespace": "default", "name": "web-0"},
                           "node": "n1", "containerID": "c1", "interface": "eth0", "mac": "02:55:c6:12:00:05",
                           "mode": "ipvlan"}  # fmt: skip
    assert obj["status"] == {"phase": "Cooldown", "boundAt": "2023-11-14T22:13:20.123456Z",
                             "releasedAt": "2023-11-14T22:15:00.500000Z"}  # fmt: skip
    assert obj["metadata"]["resourceVersion"] == "42"


def test_the_pod_uid_round_trips_for_the_leak_collector() -> None:
    obj = to_object("198.18.0.5", Slot(Phase.BOUND, "web", replace(POD, uid="5f0c7a4e-0000-4000-8000-000000000001")))
    assert obj["spec"]["pod"] == {"namespace": "default", "name": "web-0", "uid": "5f0c7a4e-0000-4000-8000-000000000001"}
    assert from_object(obj)[1].pod.uid == "5f0c7a4e-0000-4000-8000-000000000001"  # type: ignore[union-attr]


def test_a_missing_phase_is_bound() -> None:
    """A CRD with a status subresource drops the status of a create: creating is binding."""
    obj = to_object("198.18.0.5", Slot(Phase.BOUND, "web", POD, POD.sticky))
    del obj["status"]
    ip, slot = from_object(obj)
    assert (ip, slot.phase, slot.holder) == ("198.18.0.5", Phase.BOUND, ("c1", "eth0"))


def test_timestamps() -> None:
    assert seconds(timestamp(12.5)) == 12.5
    assert seconds("2024-01-01T00:00:00Z") == 1704067200.0
    assert seconds("yesterday") is None and seconds(None) is None
