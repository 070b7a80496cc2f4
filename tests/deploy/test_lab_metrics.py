"""The lab's metrics, scraped from the controller and every agent while pods come and go, and read
with prometheus_client's own text parser. Everything real: OVS, the controller, the agents, the CNI
plugin. What a lab cannot make happen (a packet-in, a node moving, a store failing, an address
cooling down: the lab pins its nodes and has no cooldown) is shown moving in
tests/controller/test_metrics.py and (packet-ins, on a real switch) tests/controller/test_controller_ovs.py;
here it must be exposed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.lab import labmetrics
from deploy.lab.lab import Lab
from labcli import LabCli, running_lab, status

pytestmark = pytest.mark.rig
SWITCH = "0000000000000001"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="module")
def lab(lab_dir: Path) -> Iterator[LabCli]:
    with running_lab(lab_dir, "--nodes", "2", "--pods-per-node", "1") as run:
        yield run


def scrape(lab: Lab, port: int) -> Samples:
    text = labmetrics.scrape(lab.rig.mgmt_ns, port)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels`."""
    return sum(value for (sample, have), value in samples.items()
               if sample == name and set(labels.items()) <= set(have))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def test_status_and_up_say_where_the_metrics_are(lab: LabCli) -> None:
    assert status(lab)["switch"]["metrics"] == {"controller": "http://127.0.0.1:9464/metrics",
                                                "agent node1": "http://127.0.0.1:9471/metrics",
                                                "agent node2": "http://127.0.0.1:9472/metrics"}
    assert "metrics (Prometheus, on 127.0.0.1 in netns" in lab("status").stdout


def test_every_metric_moves_as_pods_come_and_go(lab: LabCli, lab_dir: Path) -> None:
    handle = Lab(lab_dir, progress=lambda _: None)
    ports = {name: labmetrics.agent_port(handle.state.nodes, name) or 0 for name in ("node1", "node2")}
    assert all(ports.values()), ports
    before = scrape(handle, labmetrics.CONTROLLER_PORT)
    agents_before = {name: scrape(handle, port) for name, port in ports.items()}

    handle.add_pod("m1", node="node1")
    handle.add_pod("m2", node="node2")
    handle.delete_pod("m1")

    after = scrape(handle, labmetrics.CONTROLLER_PORT)

    def moved(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    def moved_in_all(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    for step in ("ipam", "store", "switch"):  # each ADD's steps, once each
        assert moved("underlay_allocation_step_seconds_count", step=step) == 2
    assert moved("underlay_http_requests_total", route="/v1/nodes/<node>/pods", status="200") == 2
    assert moved("underlay_http_requests_total", route="/v1/nodes/<node>/pods/<container_id>/<ifname>", status="200") == 1
    assert moved("underlay_pool_allocated", pool="default") == 1
    assert get(after, "underlay_pool_size", pool="default") == 100
    assert moved("underlay_convergence_seconds_count", switch=SWITCH) >= 3  # two ADDs and a DEL, at least
    assert moved("underlay_bundles_total", switch=SWITCH) >= 3
    assert moved("underlay_flow_mods_total", switch=SWITCH) > 0
    assert moved_in_all("underlay_flows", switch=SWITCH) > 0  # one pod more: its flows
    assert get(after, "underlay_switch_connected", switch=SWITCH, role="equal") == 1
    assert {"underlay_pool_cooldown", "underlay_store_commit_failures_total"} <= names(after)

    agents_after = {name: scrape(handle, port) for name, port in ports.items()}
    for name in ports:
        assert get(agents_after[name], "underlay_cni_add_seconds_count", result="0") - \
            get(agents_before[name], "underlay_cni_add_seconds_count", result="0") == 1
    assert get(agents_after["node1"], "underlay_cni_del_seconds_count", result="0") - \
        get(agents_before["node1"], "underlay_cni_del_seconds_count", result="0") == 1
    assert get(agents_after["node2"], "underlay_cni_del_seconds_count", result="0") == \
        get(agents_before["node2"], "underlay_cni_del_seconds_count", result="0")


def test_the_agent_logs_one_line_per_add_and_del(lab: LabCli, lab_dir: Path) -> None:
    handle = Lab(lab_dir, progress=lambda _: None)
    handle.add_pod("m3", node="node2")
    handle.delete_pod("m3")
    log = (handle.workdir / "nodes" / "node2" / "agent.log").read_text().splitlines()
    mine = [line.split(" INFO underlay.server ", 1)[1] for line in log if " INFO underlay.server cni " in line
            and "pod=default/m3 " in line]
    assert [line.split(" container=")[0] for line in mine] == ["cni command=ADD pod=default/m3",
                                                                "cni command=DEL pod=default/m3"]
    assert all(" result=0 seconds=" in line for line in mine), mine
    assert " ips=198.18.0." in mine[0], mine
