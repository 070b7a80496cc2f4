"""The agent's CNI metrics and its one line per pod ADD/DEL (node_agent/server.py, node_agent/metrics.py),
read back through prometheus_client's text parser. The agent behind the server is a stand-in at its
`handle(request)` boundary; the real path is scraped in the lab (tests/deploy/test_lab_metrics.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cni.spec import TRY_AGAIN_LATER, CniError
from controller.logs import JsonFormatter
from node_agent.metrics import AgentMetrics
from node_agent.server import AgentServer


class Ticking:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


class Answering:
    """Answers ADD with one address, refuses container "busy" with try-again-later, crashes on "bug"."""

    def handle(self, request: dict[str, Any]) -> dict[str, Any] | None:
        if request["container_id"] == "busy":
            raise CniError(TRY_AGAIN_LATER, "the controller is away")
        if request["container_id"] == "bug":
            raise KeyError("oops")
        return {"ips": [{"address": "198.18.0.100/24"}]} if request["command"] == "ADD" else None


def request(command: str, cid: str = "c0ffee") -> dict[str, Any]:
    return {"command": command, "container_id": cid, "ifname": "eth0",
            "args": {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web-0"}}


@pytest.fixture
def server(tmp_path: Path) -> AgentServer:
    made = AgentServer(tmp_path / "agent.sock", Answering(), metrics=AgentMetrics(clock=Ticking()))  # type: ignore[arg-type]
    yield made
    made.server_close()


def scrape(metrics: AgentMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_add_and_del_latency_by_result_code(server: AgentServer) -> None:
    server.carry_out(request("ADD"))
    server.carry_out(request("DEL"))
    with pytest.raises(CniError):
        server.carry_out(request("ADD", "busy"))
    with pytest.raises(CniError):
        server.carry_out(request("ADD", "bug"))
    server.carry_out(request("CHECK"))  # housekeeping: not measured

    samples = scrape(server.metrics)
    assert samples[("underlay_cni_add_seconds_count", (("result", "0"),))] == 1
    assert samples[("underlay_cni_add_seconds_sum", (("result", "0"),))] == 0.25
    assert samples[("underlay_cni_add_seconds_count", (("result", str(TRY_AGAIN_LATER)),))] == 1
    assert samples[("underlay_cni_add_seconds_count", (("result", "100"),))] == 1  # a bug: CNI's internal error
    assert samples[("underlay_cni_del_seconds_count", (("result", "0"),))] == 1
    assert {name.split("_seconds")[0] for name, _ in samples} == {"underlay_cni_add", "underlay_cni_del"}


def test_one_info_line_per_add_and_del_with_latency_and_result(server: AgentServer,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="underlay.server"):
        server.carry_out(request("ADD"))
        server.carry_out(request("DEL"))
        server.carry_out(request("CHECK"))
        with pytest.raises(CniError):
            server.carry_out(request("ADD", "busy"))

    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "underlay.server"]
    assert [(line["command"], line["result"], line["seconds"], line["pod"]) for line in lines] == [
        ("ADD", 0, 0.25, "default/web-0"), ("DEL", 0, 0.25, "default/web-0"),
        ("ADD", TRY_AGAIN_LATER, 0.25, "default/web-0")]
    assert lines[0]["ips"] == "198.18.0.100/24" and lines[2]["error"] == "the controller is away"
    assert all(line["level"] == "info" and line["event"] == "cni" for line in lines)
