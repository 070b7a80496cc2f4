"""underlayctl's client against the controller's real REST API over TLS (its HTTP server, a real
Service on a SQLite file; no switch connected, so the OpenFlow side is ctlfakes' recording fabric):
what a person sees when the token, the CA or the object is wrong. No root."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ctlfakes import TOKENS, Clock, RecordingFabric, make_config

from controller.api import Api
from controller.httpd import HttpServer, tls_context
from controller.service import Service
from controller.store import SqliteStore
from ctl.client import Client, CtlError, Settings
from deploy.lab.pki import server_files

OPERATOR = "operator-token"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    where = tmp_path_factory.mktemp("ctl-client")
    service = Service(SqliteStore(where / "store.sqlite"), make_config(), now=Clock(), fabric=RecordingFabric())
    files = server_files(where / "pki", ip="127.0.0.1")
    server = HttpServer(Api(service, tokens=TOKENS, operators=[OPERATOR]), "127.0.0.1", 0,
                        tls=tls_context(cert=str(files.cert), key=str(files.key)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Settings(f"https://127.0.0.1:{server.server_address[1]}", OPERATOR, str(files.ca))
    finally:
        server.shutdown()
        service.store.close()


def client(settings: Settings, **changes: object) -> Client:
    return Client(Settings(**{**settings.__dict__, **changes}))  # type: ignore[arg-type]


def test_an_operator_reads_over_tls_checked_with_the_ca(served: Settings) -> None:
    pools = {pool["name"]: pool for pool in client(served).get("/v1/pools")["pools"]}
    assert (pools["default"]["size"], pools["default"]["allocated"]) == (100, 0)
    assert client(served).get_optional("/v1/no-such-thing") is None


def test_a_wrong_token_a_nodes_token_and_no_ca_say_what_to_do(served: Settings) -> None:
    with pytest.raises(CtlError) as refused:
        client(served, token="guess").get("/v1/nodes")
    assert str(refused.value) == (
        f"the controller at {served.url} refused the token: missing or invalid operator token: send an operator "
        "token ([api] operator_tokens of the controller's config); pass an operator token with --token-file FILE "
        "or UNDERLAYCTL_TOKEN (one of the controller's [api] operator_tokens)")
    with pytest.raises(CtlError, match="refused: a node's token may not read operator endpoints"):
        client(served, token=TOKENS["n1"]).get("/v1/nodes")
    with pytest.raises(CtlError, match=r"its certificate is not trusted \(.*\): pass the CA that signed it with --ca-file"):
        client(served, ca_file=None).get("/v1/nodes")


def test_plain_http_to_the_tls_port_is_told_to_use_https(served: Settings) -> None:
    with pytest.raises(CtlError, match="^this port speaks TLS: use https://$"):
        client(served, url=served.url.replace("https", "http")).get("/v1/nodes")


def test_the_controllers_reason_names_the_switch(served: Settings) -> None:
    with pytest.raises(CtlError, match=r"^switch 0000000000000009: not known to the controller \(known: "):
        client(served).get("/v1/switches/9/flows")
    with pytest.raises(CtlError, match=r"^the controller cannot answer now: switch 0000000000000001: the OpenFlow "
                                       r"side is not running \(try again shortly\)"):
        client(served).get("/v1/switches/1/flows?state=actual")
