"""TLS between agents and the controller (issue 16, item 4): an agent trusts only the CA it is
given, and the controller serves plain HTTP only on loopback, only when its config says so.

Against the real controller process (its own CA, as the lab makes at `up`), and the agent's own
client; an impostor is a server whose certificate the agent must not accept.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from controller.httpd import HttpServer, tls_context
from deploy.lab import netns
from deploy.lab.control import Controller, NodeSpec, PoolSpec
from deploy.lab.pki import Authority
from node_agent.controller_client import ControllerClient, PermanentError

pytestmark = pytest.mark.rig


@pytest.fixture
def controller(rig, bridge, make_host):
    rig.ovs.vsctl("set-controller", bridge, "tcp:127.0.0.1:6653")
    n1 = make_host("n1", cidr="198.18.0.11/24")
    ctl = Controller(workdir=rig.workdir / f"ctl-{bridge}", ns=rig.mgmt_ns, nodes={"n1": NodeSpec("n1")}, trusted={},
                     pool=PoolSpec("198.18.0.0/24", ranges=("198.18.0.100-198.18.0.250",)))
    ctl.start()
    try:
        ctl.wait_healthy(timeout=15, switches=1)
        ctl.request("PUT", "/v1/nodes/n1", {"mac": n1.mac, "ip": n1.ip}, node="n1")
        yield ctl
    finally:
        ctl.stop()


def client(ctl: Controller, ca_file: Path) -> ControllerClient:
    return ControllerClient(ctl.url, "n1", token=ctl.nodes["n1"].token, ca_file=str(ca_file), timeout=5)


def test_the_agent_trusts_the_controller_only_through_its_ca_file(controller, tmp_path):
    other_ca = Authority.create(tmp_path / "other").path
    with netns.entered(controller.ns):
        assert client(controller, controller.ca_file).health()["status"] == "ok"
        with pytest.raises(PermanentError, match=r"its certificate is not trusted \(CA file: .*other/ca.pem\)"):
            client(controller, other_ca).health()


def test_the_agent_refuses_a_certificate_for_another_address(tmp_path):
    """A certificate from the CA the agent trusts, but made for another host, does not pass: a
    node's certificate cannot pose as the controller."""
    authority = Authority.create(tmp_path)
    cert, key = authority.issue(tmp_path, "node1", ip="198.18.0.11")
    server = HttpServer(lambda environ, start_response: [], "127.0.0.1", 0,
                        tls=tls_context(cert=str(cert), key=str(key)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        agent = ControllerClient(f"https://127.0.0.1:{server.server_address[1]}", "n1", token="t",
                                 ca_file=str(authority.path), timeout=5)
        with pytest.raises(PermanentError, match="IP address mismatch"):
            agent.health()
    finally:
        server.shutdown()


def test_the_agent_refuses_plain_http_to_a_non_loopback_controller():
    with pytest.raises(ValueError, match="plain http only to a loopback address"):
        ControllerClient("http://198.18.0.1:6680", "n1", token="t")
    agent = subprocess.run([sys.executable, "-m", "node_agent.main", "--node", "n1", "--controller-url",
                            "http://198.18.0.1:6680", "--socket", "/nonexistent/agent.sock"],
                           capture_output=True, text=True, timeout=60)
    assert agent.returncode != 0
    assert "plain http only to a loopback address" in agent.stderr and "Traceback" not in agent.stderr


def test_the_controller_refuses_a_config_asking_plain_http_on_a_non_loopback_address(tmp_path):
    config = tmp_path / "controller.toml"
    config.write_text(f'store = "{tmp_path / "store.sqlite"}"\n[api]\nhost = "198.18.0.1"\nplaintext = true\n')
    run = subprocess.run([sys.executable, "-m", "controller.main", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "api.plaintext: plain HTTP is allowed only on a loopback address, and api.host is 198.18.0.1" in run.stderr
    config.write_text(f'store = "{tmp_path / "store.sqlite"}"\n[api]\nhost = "127.0.0.1"\n')
    run = subprocess.run([sys.executable, "-m", "controller.main", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert (run.returncode, "api: set tls_cert and tls_key" in run.stderr) == (2, True)
