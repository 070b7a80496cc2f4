"""Intent from annotations, precedence, contradictions and pool choice (pure; no root needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import intent
from controller.config import PoolConfig
from controller.errors import Contradiction, InvalidIntent, NoPoolMatches
from controller.intent import Intent, Level, Request, Said, Source, choose_pools, read
from controller.ipam import Pool
from controller.selectors import Subject, pool_rules
from controller.sticky import StatefulSetPod

WHO = "pod default/db-2"
MEMBER = StatefulSetPod("default", "db", 2, "sts-uid")


def obj(name: str = "db-2", **annotations: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": name, "annotations": annotations}}


def namespace(**annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": "default", "annotations": annotations}}


def resolve(pod: dict[str, Any] | None = None, *, ns: dict[str, Any] | None = None, sts: dict[str, Any] | None = None,
            member: StatefulSetPod | None = None, **request: Any) -> Intent:
    return read(Request(ifname=request.pop("ifname", "eth0"), **request), pod=pod, namespace=ns, workload=sts,
                member=member, who=WHO)


# -- precedence -----------------------------------------------------------------------------------


def test_nothing_said() -> None:
    assert resolve(obj(), ns=namespace()) == Intent()


def test_each_level_overrides_the_ones_below() -> None:
    pod, ns = obj(**{"underlay.io/ippool": "p-pod"}), namespace(**{"underlay.io/default-ippool": "p-ns"})
    sts = obj("db", **{"underlay.io/ippool": "p-sts"})
    assert _pools(resolve(pod, ns=ns, sts=sts, member=MEMBER, pool="p-net")) == ("p-pod", Level.POD)
    assert _pools(resolve(obj(), ns=ns, sts=sts, member=MEMBER, pool="p-net")) == ("p-sts", Level.WORKLOAD)
    assert _pools(resolve(obj(), ns=ns, pool="p-net")) == ("p-ns", Level.NAMESPACE)
    assert _pools(resolve(obj(), ns=namespace(), pool="p-net")) == ("p-net", Level.NETWORK)


def _pools(found: Intent) -> tuple[str, Level]:
    assert found.pools is not None
    return found.pools.value[0], found.pools.source.level


@given(st.dictionaries(st.sampled_from(["pod", "workload", "namespace", "network"]), st.sampled_from(["a", "b", "c"])))
def test_the_highest_level_that_names_a_pool_wins(said: dict[str, str]) -> None:
    found = resolve(
        obj(**({"underlay.io/ippool": said["pod"]} if "pod" in said else {})),
        ns=namespace(**({"underlay.io/default-ippool": said["namespace"]} if "namespace" in said else {})),
        sts=obj("db", **({"underlay.io/ippool": said["workload"]} if "workload" in said else {})),
        member=MEMBER, pool=said.get("network"),
    )
    order = [level for level in ("pod", "workload", "namespace", "network") if level in said]
    assert (found.pools.value if found.pools else None) == ((said[order[0]],) if order else None)


def test_the_workload_s_ip_list_gives_ordinal_n_its_entry_and_the_pod_overrides_it() -> None:
    sts = obj("db", **{"underlay.io/ip-list": "198.18.0.40, 198.18.0.41,198.18.0.42"})
    found = resolve(obj(), sts=sts, member=MEMBER)
    assert found.ip == Said("198.18.0.42", Source(Level.WORKLOAD, "StatefulSet default/db annotation underlay.io/ip-list[2]"))
    found = resolve(obj(**{"underlay.io/ip": "198.18.0.50"}), sts=sts, member=MEMBER)
    assert found.ip is not None and (found.ip.value, found.ip.source.level) == ("198.18.0.50", Level.POD)


def test_the_template_s_ip_list_is_read_on_the_pod() -> None:
    found = resolve(obj(**{"underlay.io/ip-list": json.dumps(["198.18.0.40", "198.18.0.41", "198.18.0.42"])}),
                    member=MEMBER)
    assert found.ip is not None and found.ip.value == "198.18.0.42" and found.ip.source.level is Level.POD


# -- aliases ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "ip"),
    [
        ({"underlay.io/ip": "198.18.0.40"}, "198.18.0.40"),
        ({"cni.projectcalico.org/ipAddrs": '["198.18.0.40"]'}, "198.18.0.40"),
        ({"cni.projectcalico.org/ipAddrs": '["fd00::1", "198.18.0.40"]'}, "198.18.0.40,fd00::1"),  # dual stack
        ({"cni.projectcalico.org/ipAddrs": '["FD00::1"]'}, "fd00::1"),
        ({"ovn.kubernetes.io/ip_address": "198.18.0.40"}, "198.18.0.40"),
        ({"ovn.kubernetes.io/ip_address": "fd00:10:16::e, 198.18.0.40"}, "198.18.0.40,fd00:10:16::e"),
        ({"underlay.io/ip": "fd00:10:16:0::e,198.18.0.40", "ovn.kubernetes.io/ip_address": "198.18.0.40,fd00:10:16::e"},
         "198.18.0.40,fd00:10:16::e"),  # the same pair, written differently
        ({"underlay.io/ip": "198.18.0.40", "ovn.kubernetes.io/ip_address": "198.18.0.40",
          "cni.projectcalico.org/ipAddrs": '["198.18.0.40"]'}, "198.18.0.40"),  # agreeing is fine
    ],
)
def test_fixed_address_aliases(annotations: dict[str, str], ip: str | None) -> None:
    found = resolve(obj(**annotations))
    assert (found.ip.value if found.ip else None) == ip


def test_mac_and_its_alias_are_normalised() -> None:
    found = resolve(obj(**{"underlay.io/mac": "02:AA:00:00:00:01", "ovn.kubernetes.io/mac_address": "02-aa-00-00-00-01"}))
    assert found.mac is not None and found.mac.value == "02:aa:00:00:00:01"


@pytest.mark.parametrize(
    ("annotations", "ifname", "pools"),
    [
        ({"ipam.spidernet.io/ippool": '{"ipv4": ["a", "b"], "ipv6": ["v6"]}'}, "eth0", ("a", "b")),
        ({"ipam.spidernet.io/ippool": '{"interface": "eth0", "ipv4pools": ["a"]}'}, "eth0", ("a",)),
        ({"ipam.spidernet.io/ippool": '{"interface": "net1", "ipv4": ["a"]}'}, "eth0", None),
        ({"ipam.spidernet.io/ippools": '[{"interface": "eth0", "ipv4": ["a"]}, {"interface": "net1", "ipv4": ["b"]}]',
          "ipam.spidernet.io/ippool": '{"ipv4": ["ignored"]}'}, "net1", ("b",)),
        ({"underlay.io/ippool": '[{"interface": "eth0", "pool": "a"}, {"interface": "net1", "pool": "b"}]'}, "net1", ("b",)),
        ({"underlay.io/ippool": '[{"interface": "eth0", "pool": "a"}]'}, "net1", None),
        ({"underlay.io/ippool": "a", "ipam.spidernet.io/ippool": '{"ipv4": ["a"]}'}, "eth0", ("a",)),
    ],
)
def test_pool_annotations_per_interface(annotations: dict[str, str], ifname: str, pools: tuple[str, ...] | None) -> None:
    found = resolve(obj(**annotations), ifname=ifname)
    assert (found.pools.value if found.pools else None) == pools


def test_namespace_defaults_and_their_alias() -> None:
    found = resolve(obj(), ns=namespace(**{"underlay.io/default-ippool": '["a", "b"]'}))
    assert found.pools == Said(("a", "b"), Source(Level.NAMESPACE, "namespace default annotation underlay.io/default-ippool"))
    found = resolve(obj(), ns=namespace(**{"ipam.spidernet.io/default-ipv4-ippool": '["c"]'}))
    assert found.pools is not None and found.pools.value == ("c",)


# -- contradictions and bad values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "request_fields", "message"),
    [
        ({"underlay.io/ip": "198.18.0.40", "ovn.kubernetes.io/ip_address": "198.18.0.41"}, {},
         "pod default/db-2: annotation underlay.io/ip says 198.18.0.40, "
         "annotation ovn.kubernetes.io/ip_address says 198.18.0.41; make them agree or remove one"),
        ({"underlay.io/ip": "198.18.0.40"}, {"ip": "198.18.0.41"},
         "annotation underlay.io/ip says 198.18.0.40, the CNI request's ip (CNI_ARGS IP) says 198.18.0.41"),
        ({"cni.projectcalico.org/ipAddrs": '["198.18.0.40"]', "underlay.io/ip-list": "198.18.0.1,198.18.0.2,198.18.0.3"}, {},
         "pod default/db-2: annotation cni.projectcalico.org/ipAddrs says 198.18.0.40, "
         "annotation underlay.io/ip-list[2] says 198.18.0.3"),
        ({"underlay.io/mac": "02:00:00:00:00:01"}, {"mac": "02:00:00:00:00:02"},
         "underlay.io/mac says 02:00:00:00:00:01, the CNI request's mac (CNI_ARGS MAC) says 02:00:00:00:00:02"),
        ({"underlay.io/ippool": "a", "ipam.spidernet.io/ippool": '{"ipv4": ["b"]}'}, {},
         "pod default/db-2: annotation underlay.io/ippool says a, annotation ipam.spidernet.io/ippool says b"),
    ],
)
def test_contradictions_name_both_sources(annotations: dict[str, str], request_fields: dict[str, str], message: str) -> None:
    with pytest.raises(Contradiction, match=_literal(message)):
        resolve(obj(**annotations), member=MEMBER, **request_fields)


def test_namespace_default_and_its_alias_disagreeing() -> None:
    ns = namespace(**{"underlay.io/default-ippool": "a", "ipam.spidernet.io/default-ipv4-ippool": '["b"]'})
    with pytest.raises(Contradiction, match="default-ippool says a, .*/default-ipv4-ippool says b"):
        resolve(obj(), ns=ns)


def test_lower_levels_do_not_contradict_higher_ones() -> None:
    sts = obj("db", **{"underlay.io/ip-list": '["198.18.0.1", "198.18.0.2", "198.18.0.3"]'})
    found = resolve(obj(), sts=sts, member=MEMBER, ip="198.18.0.9")
    assert found.ip is not None and found.ip.value == "198.18.0.9"


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"underlay.io/ip": "198.18.0.400"}, "pod default/db-2: annotation underlay.io/ip: '198.18.0.400' is not an IPv4 or IPv6 address"),
        ({"underlay.io/ip": "fe80::1%eth0"}, "annotation underlay.io/ip: 'fe80::1%eth0' is not an IPv4 or IPv6 address"),
        ({"underlay.io/ip": "fd00::1,fd00::2"}, "annotation underlay.io/ip: more than one IPv6 address (fd00::1, fd00::2); a pod interface gets one of each family"),
        ({"underlay.io/ip-list": '["198.18.0.1,fd00::1", "198.18.0.2,fd00::1", "198.18.0.3"]'}, "fd00::1 listed more than once"),
        ({"underlay.io/mac": "01:00:5e:00:00:01"}, "annotation underlay.io/mac: 01:00:5e:00:00:01 is a multicast address"),
        ({"cni.projectcalico.org/ipAddrs": "198.18.0.40"}, "ipAddrs: not valid JSON"),
        ({"cni.projectcalico.org/ipAddrs": '["198.18.0.40", "198.18.0.41"]'}, "more than one IPv4 address"),
        ({"cni.projectcalico.org/ipAddrs": '[]'}, "ipAddrs: expected a JSON list of addresses"),
        ({"underlay.io/ippool": "[1]"}, "expected a pool name or a JSON list"),
        ({"underlay.io/ippool": "has space"}, "'has space' is not a pool name"),
        ({"underlay.io/ippool": '[{"interface": "eth0", "pool": "a"}, {"interface": "eth0", "pool": "b"}]'},
         "interface eth0 is listed 2 times"),
        ({"ipam.spidernet.io/ippool": '["a"]'}, "ipam.spidernet.io/ippool: expected a JSON object"),
        ({"underlay.io/ip-list": "198.18.0.1,198.18.0.1,198.18.0.2"}, "198.18.0.1 listed more than once"),
        ({"underlay.io/ip-list": "198.18.0.1,198.18.0.2"}, "pod default/db-2: annotation underlay.io/ip-list: 2 addresses, no entry for ordinal 2"),
    ],
)
def test_bad_values_name_the_object_and_key(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidIntent, match=_literal(message)):
        resolve(obj(**annotations), member=MEMBER)


def test_an_ip_list_needs_a_statefulset_pod() -> None:
    with pytest.raises(InvalidIntent, match="pod default/db-2: annotation underlay.io/ip-list: the pod is not a StatefulSet's"):
        resolve(obj(**{"underlay.io/ip-list": "198.18.0.1"}))


def _literal(text: str) -> str:
    import re

    return re.escape(text)


# -- choosing pools ---------------------------------------------------------------------------------


def pool(name: str, subnet: str, *, default: bool = False, **spec: Any) -> Pool:
    return Pool.from_config(PoolConfig(name, subnet, ((subnet.rsplit(".", 1)[0] + ".10", subnet.rsplit(".", 1)[0] + ".99"),),
                                       default=default, rules=pool_rules(spec)))


POOLS = [
    pool("web", "198.18.1.0/24", default=True),
    pool("db", "198.18.2.0/24", namespaces=["default"]),
    pool("gpu", "198.18.3.0/24", nodeSelector={"matchLabels": {"gpu": "yes"}}),
    pool("off", "198.18.4.0/24", default=True, disabled=True),
]
SUBJECT = Subject("default", "n1", pod_labels={"app": "db"})


def choose(found: Intent, subject: Subject = SUBJECT) -> tuple[str, ...]:
    return choose_pools(found, subject=subject, pools=POOLS, who=WHO)


def said(level: Level, value: Any, what: str = "x") -> Said[Any]:
    return Said(value, Source(level, what))


def test_defaults_when_nothing_is_said_minus_those_that_refuse() -> None:
    assert choose(Intent()) == ("web",)


def test_named_pools_in_order_minus_those_that_refuse() -> None:
    assert choose(Intent(pools=said(Level.POD, ("gpu", "db", "web")))) == ("db", "web")


def test_no_pool_matches_says_why_for_each() -> None:
    found = Intent(pools=said(Level.POD, ("gpu", "off", "nope"), "annotation underlay.io/ippool"))
    with pytest.raises(NoPoolMatches, match=_literal(
        "pod default/db-2: no pool matches (asked by annotation underlay.io/ippool): "
        "gpu: node n1 does not match nodeSelector (wants gpu In (yes), has no label gpu); off: disabled; nope: no such pool"
    )):
        choose(found)
    with pytest.raises(NoPoolMatches, match="db: namespace other is not in namespaces"):
        choose(Intent(pools=said(Level.POD, ("db",))), Subject("other", "n1"))


def test_no_default_pool() -> None:
    with pytest.raises(NoPoolMatches, match="no pool named .* and no pool is marked default"):
        choose_pools(Intent(), subject=SUBJECT, pools=POOLS[1:3], who=WHO)


def test_a_fixed_address_picks_the_pool_holding_it_over_lower_levels() -> None:
    found = Intent(pools=said(Level.NAMESPACE, ("web",)), ip=said(Level.POD, "198.18.2.40"))
    assert choose(found) == ("db",)


def test_a_fixed_address_outside_a_pool_named_as_high_is_a_contradiction() -> None:
    found = Intent(pools=said(Level.POD, ("web",), "annotation underlay.io/ippool"),
                   ip=said(Level.POD, "198.18.2.40", "annotation underlay.io/ip"))
    with pytest.raises(Contradiction, match=_literal(
        "pod default/db-2: 198.18.2.40 (annotation underlay.io/ip) is not in pool web (annotation underlay.io/ippool)"
    )):
        choose(found)
    found = Intent(pools=said(Level.POD, ("web",)), ip=said(Level.WORKLOAD, "198.18.2.40"))
    with pytest.raises(Contradiction):
        choose(found)


def test_a_fixed_address_in_a_named_pool_is_fine() -> None:
    assert choose(Intent(pools=said(Level.POD, ("web", "db")), ip=said(Level.POD, "198.18.2.40"))) == ("db",)


def test_a_fixed_address_in_no_pool_or_in_one_that_refuses() -> None:
    with pytest.raises(NoPoolMatches, match="198.18.9.9 .* is in no pool's ranges"):
        choose(Intent(ip=said(Level.POD, "198.18.9.9")))
    with pytest.raises(NoPoolMatches, match="pools holding 198.18.3.40 .*gpu: node n1 does not match"):
        choose(Intent(ip=said(Level.POD, "198.18.3.40")))
    assert choose(Intent(ip=said(Level.POD, "198.18.3.40")), Subject("default", "n2", node_labels={"gpu": "yes"})) == ("gpu",)


def test_the_module_names_every_annotation_it_reads() -> None:
    documented = intent.__doc__ or ""
    for name in ("underlay.io/ippool", "underlay.io/ip", "underlay.io/mac", "underlay.io/ip-list",
                 "underlay.io/default-ippool"):
        assert name in documented
