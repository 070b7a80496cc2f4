"""An agent reaches the controller by its Service name over TLS and checks the certificate against
that name (issue 12): the controller's certificate (deploy/lab/pki.py) names
`underlay-controller.underlay-system.svc` and `.svc.cluster.local` besides its address.

Real TLS handshakes with the controller's HTTP server on loopback. The name is not resolved: the
agent's `controller_address` (curl's --resolve) says where to connect, and the name in the URL is
what the certificate must carry (SNI and the check), so nothing here needs a DNS entry or
/etc/hosts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from jsonstub import health_server

from controller.httpd import tls_context
from deploy.lab.pki import CONTROLLER_NAMES, ServerFiles, server_files
from node_agent.controller_client import ControllerClient, PermanentError


def serve(files: ServerFiles) -> AbstractContextManager[tuple[int, list[dict[str, str]]]]:
    return health_server(tls=tls_context(cert=str(files.cert), key=str(files.key)))


@pytest.fixture
def named(tmp_path: Path) -> Iterator[tuple[ServerFiles, int]]:
    files = server_files(tmp_path / "pki", ip="127.0.0.1")
    with serve(files) as (port, seen):
        yield files, port
    assert {headers["HOST"].rsplit(":", 1)[0] for headers in seen} <= set(CONTROLLER_NAMES)  # asked by name


@pytest.mark.parametrize("name", CONTROLLER_NAMES)
def test_the_agent_reaches_the_controller_by_its_service_name(named: tuple[ServerFiles, int], name: str) -> None:
    files, port = named
    agent = ControllerClient(f"https://{name}:{port}", "n1", token="t", ca_file=str(files.ca), connect_to="127.0.0.1")
    assert agent.health()["status"] == "ok"


def test_a_certificate_without_the_name_is_refused(tmp_path: Path) -> None:
    """From the CA the agent trusts, for the controller's address but not its name: an impostor on
    the Service's address with another certificate of that CA does not pass."""
    files = server_files(tmp_path / "pki", ip="127.0.0.1", dns=())
    with serve(files) as (port, _):
        agent = ControllerClient(f"https://{CONTROLLER_NAMES[0]}:{port}", "n1", token="t", ca_file=str(files.ca),
                                 connect_to="127.0.0.1")
        with pytest.raises(PermanentError, match="Hostname mismatch"):
            agent.health()
        by_address = ControllerClient(f"https://127.0.0.1:{port}", "n1", token="t", ca_file=str(files.ca))
        assert by_address.health()["status"] == "ok"  # the same server, by the address it is made for
