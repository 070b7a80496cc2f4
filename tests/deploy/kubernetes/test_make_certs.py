"""deploy/kubernetes/tls/make-certs.sh, as README.md has a user run it: the controller serves its
certificate, and a client checking it as the agent does (`ssl.create_default_context` with the CA
file, node_agent/controller_client.py) for the Service's name trusts it, also under OpenSSL's strict
X.509 checks (Python 3.13's default); for another name it does not."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.httpd import HttpServer, tls_context
from deploy.k8s import manifests

SCRIPT = manifests.MANIFEST_DIR / "tls" / "make-certs.sh"
NAME = "underlay-controller.underlay-system.svc"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed: apt-get install openssl", pytrace=False)
    directory = tmp_path_factory.mktemp("tls") / "out"
    subprocess.run([str(SCRIPT), str(directory)], check=True, capture_output=True, env={**os.environ, "DAYS": "2"})
    return directory


@pytest.fixture(scope="module")
def controller(certs: Path) -> Iterator[int]:
    """The controller's own HTTPS server (controller/httpd.py) with the script's certificate."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"status": "ok"}']

    server = HttpServer(app, "127.0.0.1", 0, tls=tls_context(cert=str(certs / "tls.crt"), key=str(certs / "tls.key")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def handshake(certs: Path, port: int, name: str) -> dict:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            return tls.getpeercert()


def test_the_script_writes_the_four_files_and_keeps_the_keys_private(certs):
    assert sorted(p.name for p in certs.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert (certs / "tls.key").stat().st_mode & 0o077 == 0 and (certs / "ca.key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("name", [NAME, NAME + ".cluster.local"])
def test_the_certificate_is_trusted_for_the_service_name(certs, controller, name):
    assert handshake(certs, controller, name)["subjectAltName"] == (("DNS", NAME), ("DNS", NAME + ".cluster.local"))


@pytest.mark.parametrize("name", ["underlay-controller.default.svc", "127.0.0.1"])
def test_another_name_is_refused(certs, controller, name):
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(certs, controller, name)
