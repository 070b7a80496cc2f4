"""The agent's CNI metrics and its one line per pod ADD/DEL (node_agent/server.py, node_agent/metrics.py),
read back through prometheus_client's text parser. The agent behind the server is a stand-in at its
`handle(request)` boundary; the real path is scraped in the lab (tests/deploy/test_lab_metrics.py)."""

from __future__ import annotations

import json
import logging
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cni.spec import TRY_AGAIN_LATER, CniError
from controller.logs import JsonFormatter
from deploy.lab import labmetrics, netns
from deploy.lab.process import start_daemon, stop_pidfile, wait_until
from node_agent.main import load_config, main
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
def server(tmp_path: Path) -> Iterator[AgentServer]:
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


def test_the_agent_flags_for_metrics_and_log_format(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('node = "n1"\nmetrics = "127.0.0.1:9471"\nlog_format = "json"\n')
    config = load_config(["--config", str(tmp_path / "agent.toml")])
    assert (config.metrics, config.log_format) == ("127.0.0.1:9471", "json")
    assert load_config(["--node", "n1"]).metrics is None  # no listener unless configured
    assert load_config(["--node", "n1", "--metrics", ""]).metrics is None


@pytest.mark.parametrize("flags, message", [
    (["--metrics", "localhost:9471"], "underlay-agent: metrics 'localhost:9471': expected HOST:PORT with an IP address"),
    (["--log-format", "xml"], "underlay-agent: log format 'xml': one of text, json"),
])
def test_the_agent_refuses_a_bad_metrics_address_or_log_format(tmp_path: Path, flags: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        main(["--node", "n1", "--socket", str(tmp_path / "agent.sock"), "--state-dir", str(tmp_path / "state"), *flags])


@pytest.fixture
def node_ns() -> Iterator[str]:
    name = f"ulmet-{secrets.token_hex(3)}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


def test_the_agent_process_serves_metrics_and_logs_json_lines(tmp_path: Path, node_ns: str) -> None:
    """The real daemon in a namespace of its own (standalone: no controller): its listener on that
    namespace's loopback, its log lines JSON."""
    pidfile, logfile = tmp_path / "agent.pid", tmp_path / "agent.log"
    start_daemon([sys.executable, "-m", "node_agent.main", "--node", "n1", "--netns", node_ns,
                  "--socket", str(tmp_path / "agent.sock"), "--state-dir", str(tmp_path / "state"),
                  "--metrics", "127.0.0.1:9471", "--log-format", "json"],
                 pidfile=pidfile, logfile=logfile, ns=node_ns, die_with_parent=True)
    try:
        wait_until(lambda: "started" in logfile.read_text(), timeout=20, what=f"the agent (log: {logfile})")
        families = {f.name: f for f in text_string_to_metric_families(labmetrics.scrape(node_ns, 9471))}
    finally:
        stop_pidfile(pidfile)
    assert {"underlay_cni_add_seconds", "underlay_cni_del_seconds"} <= set(families)
    started = [json.loads(line) for line in logfile.read_text().splitlines() if '"started"' in line]
    assert [(line["event"], line["node"], line["metrics"]) for line in started] == [
        ("started", "n1", "http://127.0.0.1:9471/metrics")]
