"""The controller process against the rig's real Open vSwitch: ARP in the datapath, anti-spoofing,
release, zero-churn restarts, auth and concurrent allocation."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from prometheus_client.parser import text_string_to_metric_families

from controller.metrics import packet_in_reason
from deploy.lab import frames, labmetrics, netns
from deploy.lab.control import ApiError, Controller, NodeSpec, PoolSpec

pytestmark = pytest.mark.rig


@pytest.fixture
def segment(rig, bridge, make_host):
    """Two nodes (ports pinned in config) and an external host on one switch, with a real controller."""
    yield from _segment(rig, bridge, make_host, pinned=True)


@pytest.fixture
def unpinned_segment(rig, bridge, make_host):
    """The same, but the controller must learn the nodes' ports from their first frames."""
    yield from _segment(rig, bridge, make_host, pinned=False)


def _segment(rig, bridge, make_host, *, pinned: bool, audit_interval: float | None = None):
    rig.ovs.vsctl("set-controller", bridge, "tcp:127.0.0.1:6653")
    n1 = make_host("n1", cidr="198.18.0.11/24")
    n2 = make_host("n2", cidr="198.18.0.12/24")
    ext = make_host("ext", cidr="198.18.0.2/24")
    dpid = _dpid(rig, bridge)
    controller = Controller(
        workdir=rig.workdir / f"ctl-{bridge}", ns=rig.mgmt_ns,
        nodes={n.name: NodeSpec(n.name, dpid=dpid, port=n.ofport) if pinned else NodeSpec(n.name) for n in (n1, n2)},
        trusted={dpid: (ext.ofport,)},
        pool=PoolSpec("198.18.0.0/24", ranges=("198.18.0.100-198.18.0.250",)),
        metrics_port=labmetrics.CONTROLLER_PORT,  # on loopback in the rig's own management namespace
        audit_interval=audit_interval,
    )
    controller.start()
    try:
        controller.wait_healthy(timeout=15, switches=1)
        for node in (n1, n2):
            controller.request("PUT", f"/v1/nodes/{node.name}", {"mac": node.mac, "ip": node.ip}, node=node.name)
        yield controller, n1, n2, ext
    finally:
        controller.stop()


def _dpid(rig, bridge: str) -> int:
    return int(rig.ovs.vsctl("get", "bridge", bridge, "other-config:datapath-id").strip().strip('"'), 16)


def place(controller: Controller, node: str, name: str, **extra) -> dict:
    body = {"container_id": f"c-{name}", "ifname": "eth0", "namespace": "default", "name": name, "mode": "macvlan"}
    return controller.request("POST", f"/v1/nodes/{node}/pods", {**body, **extra}, node=node)


def who_has(ext, ip: str) -> list[frames.Arp]:
    request = frames.Arp(op=1, sha=ext.mac, spa=ext.ip, tha="00:00:00:00:00:00", tpa=ip,
                         eth_src=ext.mac, eth_dst=frames.BROADCAST)
    return frames.arp_exchange(ext.netns, ext.ifname, request, timeout=1.0)


def responder_packets(rig, bridge: str, ip: str) -> int:
    """n_packets of the ARP-responder flow for `ip` (the one that rewrites and answers IN_PORT)."""
    for line in rig.ovs.ofctl("dump-flows", bridge, f"arp,arp_tpa={ip}").splitlines():
        if "IN_PORT" in line:
            return int(re.search(r"n_packets=(\d+)", line).group(1))
    raise AssertionError(f"no responder flow for {ip}")


def test_switch_answers_arp_for_every_pod_without_the_controller(rig, bridge, segment):
    controller, n1, n2, ext = segment
    pods = [place(controller, node.name, f"web-{i}-{node.name}") for node in (n1, n2) for i in range(2)]
    before = controller.health()["stats"]["packet_ins"]

    for pod in pods:
        replies = who_has(ext, pod["ip"])
        assert [r.sha for r in replies] == [pod["mac"]], pod
        assert responder_packets(rig, bridge, pod["ip"]) == 1

    assert controller.health()["stats"]["packet_ins"] == before


def test_spoofed_arp_from_node1_claiming_node2_pod_reaches_nobody(rig, bridge, segment):
    controller, n1, n2, ext = segment
    victim = place(controller, "n2", "db-0")
    spoof = frames.Arp(op=2, sha=n1.mac, spa=victim["ip"], tha=frames.BROADCAST, tpa=victim["ip"],
                       eth_src=n1.mac, eth_dst=frames.BROADCAST)

    seen: list[frames.Arp] = []
    listener = threading.Thread(target=lambda: seen.extend(frames.listen(ext.netns, ext.ifname, timeout=1.5)))
    listener.start()
    for _ in range(3):
        frames.send(n1.netns, n1.ifname, frames.arp_frame(spoof))
    listener.join()

    assert [a for a in seen if a.spa == victim["ip"]] == []
    assert who_has(ext, victim["ip"])[0].sha == victim["mac"]  # the truth still answers


def test_release_removes_the_pods_flows(rig, bridge, segment):
    controller, n1, _, ext = segment
    pod = place(controller, "n1", "tmp-0")
    assert pod["ip"] in rig.ovs.ofctl("dump-flows", bridge)

    assert controller.request("DELETE", f"/v1/nodes/n1/pods/c-tmp-0/eth0", node="n1")["released"] is True
    assert controller.request("DELETE", f"/v1/nodes/n1/pods/c-tmp-0/eth0", node="n1")["released"] is False

    assert pod["ip"] not in rig.ovs.ofctl("dump-flows", bridge)
    assert who_has(ext, pod["ip"]) == []


def test_restart_after_sigkill_keeps_allocations_sends_no_flow_mods_and_loses_no_ping(rig, bridge, segment):
    controller, n1, _, ext = segment
    pod = place(controller, "n1", "web-0")
    pod_host = rig.add_macvlan_pod("restart-pod", n1, cidr=f"{pod['ip']}/24", mac=pod["mac"])
    assert ext.ping(pod["ip"])
    flows_before = _flow_table(rig, bridge)

    ping = subprocess.Popen(netns.exec_argv(ext.netns, ["ping", "-n", "-q", "-i", "0.01", "-c", "400", pod["ip"]]),
                            stdout=subprocess.PIPE, text=True)
    controller.restart(kill=True)
    health = controller.wait_healthy(timeout=15, switches=1)
    output, _ = ping.communicate(timeout=30)
    netns.remove(pod_host.netns)

    assert " 0% packet loss" in output, output
    assert health["stats"]["flow_mods"] == 0
    assert _flow_table(rig, bridge) == flows_before  # the same flows, not re-added (cookies, matches)
    pods = controller.request("GET", "/v1/nodes/n1/pods", node="n1")["pods"]
    assert [(p["name"], p["ip"]) for p in pods] == [("web-0", pod["ip"])]


def test_a_killed_switch_gets_identical_flows_back_and_answers_again(rig, bridge, segment):
    """ovs-vswitchd SIGKILLed and started again (its userspace datapath starts empty): on reconnect
    the controller reads nothing of ours and installs the whole desired set, the same flows as before."""
    controller, _, _, ext = segment
    pods = [place(controller, node, f"sw-{i}") for i, node in enumerate(("n1", "n2", "n1"))]
    before = _flow_table(rig, bridge)

    rig.ovs.restart_switch(kill=True)

    assert _wait_for(lambda: True if _flow_table(rig, bridge) == before else None, timeout=30), \
        "the flows after the restart differ from those before"
    assert [r.sha for r in who_has(ext, pods[0]["ip"])] == [pods[0]["mac"]]


def _flow_table(rig, bridge: str) -> list[str]:
    """The bridge's flows without counters and ages."""
    return sorted(re.sub(r" (duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*,", "", line).strip()
                  for line in rig.ovs.ofctl("dump-flows", bridge).splitlines()[1:])


def test_requests_without_a_valid_token_get_401_and_change_nothing(segment):
    controller, n1, n2, _ = segment
    body = {"container_id": "x", "ifname": "eth0", "namespace": "default", "name": "x", "mode": "macvlan"}

    assert controller.raw_request("POST", "/v1/nodes/n1/pods", body)[0] == 401
    assert controller.raw_request("POST", "/v1/nodes/n1/pods", body, token="wrong")[0] == 401
    assert controller.raw_request("POST", "/v1/nodes/n1/pods", body, token=controller.nodes["n2"].token)[0] == 401
    assert controller.request("GET", "/v1/nodes/n1/pods", node="n1")["pods"] == []


def test_100_parallel_allocations_get_100_distinct_addresses(segment):
    controller, *_ = segment
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda i: place(controller, "n1" if i % 2 else "n2", f"p-{i}"), range(100)))

    assert len({a["ip"] for a in answers}) == 100
    assert len({a["mac"] for a in answers}) == 100


def test_node_port_is_learned_from_the_nodes_first_frame_never_from_a_pods(rig, bridge, unpinned_segment):
    controller, n1, n2, ext = unpinned_segment
    with pytest.raises(ApiError) as unknown_port:
        place(controller, "n1", "early")
    assert unknown_port.value.status == 503

    # a frame from a MAC the controller does not know, on n1's port, teaches nothing
    stranger = rig.add_macvlan_pod("stranger", n1, cidr="198.18.0.77/24")
    stranger.run("arping", "-c", "2", "-w", "2", "-I", "eth0", ext.ip, check=False)
    assert controller.request("PUT", "/v1/nodes/n1", {"mac": n1.mac, "ip": n1.ip}, node="n1")["port"] is None

    learn = re.findall(r"cookie=(0x[0-9a-f]+),.*actions=.*CONTROLLER", rig.ovs.ofctl("dump-flows", bridge, f"dl_src={n1.mac}"))
    assert len(learn) == 1, learn  # the flow that sends n1's first frame to the controller: its purpose is the reason
    n1.run("arping", "-c", "1", "-w", "2", "-I", "eth0", ext.ip, check=False)  # the node speaks
    port = _wait_for(lambda: controller.request("PUT", "/v1/nodes/n1", {"mac": n1.mac, "ip": n1.ip},
                                                node="n1")["port"])
    assert port == n1.ofport
    pod = place(controller, "n1", "web-0")
    assert [r.sha for r in who_has(ext, pod["ip"])] == [pod["mac"]]
    assert controller.health()["stats"]["packet_ins"] >= 1
    scraped = text_string_to_metric_families(labmetrics.scrape(rig.mgmt_ns, labmetrics.CONTROLLER_PORT))
    learned = [s for family in scraped for s in family.samples if s.name == "underlay_packet_ins_total"]
    assert [(s.labels, s.value >= 1) for s in learned] == [
        ({"switch": f"{_dpid(rig, bridge):016x}", "reason": packet_in_reason(int(learn[0], 16))}, True)]


def _wait_for(probe, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while (value := probe()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_a_state_that_cannot_become_flows_fails_adds_at_once_then_recovers(rig, bridge, segment):
    """A store holding two pods with one MAC on two ports (a bug's leftover) makes every convergence
    fail the same way. ADDs get a prompt 503 naming the switch and the error (not a timeout), the
    controller logs it once however often it retries, and converges as soon as the clash is gone."""
    from controller.store import Mode, Pod, SqliteStore

    controller, n1, n2, _ = segment
    first = place(controller, "n1", "web-0")
    controller.stop()
    store = SqliteStore(controller.workdir / "store.sqlite")
    with store.transaction() as tx:
        tx.put_pod(Pod(container_id="c-clash", ifname="eth0", node="n2", namespace="default", name="clash",
                       pool="default", ip="198.18.0.250", mac=first["mac"], mode=Mode.MACVLAN))
    store.sync()
    store.close()
    controller.start()
    controller.wait_healthy(timeout=15, switches=1)
    dpid = f"{_dpid(rig, bridge):016x}"

    for attempt in range(5):
        started = time.monotonic()
        with pytest.raises(ApiError) as refused:
            place(controller, "n1", f"web-{attempt + 1}")
        assert time.monotonic() - started < 3, "a prompt answer, not the 5 s apply timeout"
        assert refused.value.status == 503
        assert f"switch {dpid} cannot converge: StateError: " in refused.value.body["error"]
    failures = [line for line in controller.logfile.read_text().splitlines()
                if "event=converge-failed" in line and "StateError" in line]
    assert len(failures) == 1, failures

    assert controller.request("DELETE", "/v1/nodes/n2/pods/c-clash/eth0", node="n2")["released"] is True
    recovered = _wait_for(lambda: _placed_or_none(controller, "n1", "web-9"), timeout=15)
    assert recovered is not None, "the worker converges once the clash is gone (at most one backoff later)"
    assert recovered["ip"] in rig.ovs.ofctl("dump-flows", bridge)
    assert "event=converge-recovered" in controller.logfile.read_text()


def _placed_or_none(controller: Controller, node: str, name: str) -> dict | None:
    try:
        return place(controller, node, name)
    except ApiError as err:
        if err.status != 503:
            raise
        return None


OLD_COOKIE, OLD_SEEN_COOKIE = 0x55AA_0000_0000_0000, 0x55AA_0000_0000_5EE0  # before cookies named flows


def test_an_upgrade_from_exact_cookie_flows_converges_in_place_once_then_sends_nothing(rig, bridge, segment):
    """The switch holds what the version before openflow.cookies wrote: every flow under the bare
    configured cookie, `seen` records learned under cookie ^ 0x5ee0 (inside our tag). The new
    controller reads them all as ours, replaces each in place (an add over the same table,
    priority and match: no moment without it, no ping lost), sends no delete (Open vSwitch drops
    the old records with the trusted-port flows that learned them: a source is recorded again by
    its next frame), and after that a restart sends nothing."""
    controller, n1, _, ext = segment
    pod = place(controller, "n1", "web-0")
    pod_host = rig.add_macvlan_pod("upgrade-pod", n1, cidr=f"{pod['ip']}/24", mac=pod["mac"])
    assert ext.ping(pod["ip"])
    desired = _ours(_flow_table(rig, bridge))
    controller.stop()
    _downgrade(rig, bridge, ext)
    assert {re.match(r"cookie=(\w+)", line).group(1) for line in _ours(_flow_table(rig, bridge))} == {hex(OLD_COOKIE)}
    records = _records(rig, bridge)
    assert records and all(f"cookie={OLD_SEEN_COOKIE:#x}" in line for line in records)

    ping = subprocess.Popen(netns.exec_argv(ext.netns, ["ping", "-n", "-q", "-i", "0.01", "-c", "300", pod["ip"]]),
                            stdout=subprocess.PIPE, text=True)
    controller.start()
    controller.wait_healthy(timeout=15, switches=1)
    upgraded = _wait_for(lambda: True if _ours(_flow_table(rig, bridge)) == desired else None, timeout=15)
    output, _ = ping.communicate(timeout=30)

    assert upgraded, "the flows after the upgrade differ from those the controller writes"
    assert " 0% packet loss" in output, output
    renamed = [line for line in desired if not line.startswith(f"cookie={OLD_COOKIE:#x},")]  # table defaults keep it
    assert controller.health()["stats"]["flow_mods"] == len(renamed)  # one add each: no delete, no second pass
    # the old records went with the flows that learned them (delete_learned); the pings recorded ext anew
    after = _records(rig, bridge)
    assert not [line for line in after if f"cookie={OLD_SEEN_COOKIE:#x}" in line]
    assert [line for line in after if f"dl_src={ext.mac}" in line and "cookie=0xaa55" in line]

    controller.restart(kill=True)
    controller.wait_healthy(timeout=15, switches=1)
    place(controller, "n2", "web-1")
    netns.remove(pod_host.netns)
    assert controller.health()["stats"]["flow_mods"] == 6  # web-1's own flows, nothing else


def _downgrade(rig, bridge: str, ext) -> None:
    """Rewrite the bridge's flows as the old version wrote them, and let the trusted port's
    sources be recorded again under the old `seen` cookie."""
    lines = []
    for line in rig.ovs.ofctl("--no-stats", "dump-flows", bridge).splitlines():
        if ", table=3," in line or "actions=" not in line:
            continue
        line = re.sub(r"learn\((.*?)cookie=0x\w+", rf"learn(\1cookie={OLD_SEEN_COOKIE:#x}", line)
        lines.append(re.sub(r"^\s*cookie=0x\w+", f"cookie={OLD_COOKIE:#x}", line))
    flows = rig.workdir / f"old-flows-{bridge}"
    flows.write_text("\n".join(lines) + "\n")
    rig.ovs.ofctl("add-flows", bridge, str(flows))  # an add replaces the flow with the same key
    rig.ovs.ofctl("del-flows", bridge, "table=3")
    ext.run("arping", "-c", "1", "-w", "2", "-I", ext.ifname, "198.18.0.11", check=False)


def _ours(table: list[str]) -> list[str]:
    """The lines of tables other than `seen` (where a learn action names it too)."""
    return [line for line in table if ", table=3," not in line]


def _records(rig, bridge: str) -> list[str]:
    """The `seen` table, without counters."""
    return [line.strip() for line in rig.ovs.ofctl("--no-stats", "dump-flows", bridge, "table=3").splitlines()
            if "actions=" in line]
