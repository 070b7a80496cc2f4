"""The agent re-reads its token file when kubelet rotates it (node_agent/tokenfile.py).

The rotation is done as kubelet's atomic writer does it for a projected volume: the token is
`<dir>/token -> ..data/token`, `..data -> ..<timestamp>`, and a new token is a new timestamped
directory with `..data` swapped to it by a rename. The agent's own client sends what it reads to a
real HTTP server, which records the header.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from jsonstub import health_server

from node_agent.controller_client import ControllerClient
from node_agent.tokenfile import TokenFile


def project(directory: Path, token: str, *, generation: int) -> Path:
    """Write `token` into a projected-volume layout in `directory`, as kubelet does (atomically)."""
    payload = directory / f"..2026_11_27_{generation:04d}"
    payload.mkdir()
    (payload / "token").write_text(token + "\n")
    staged = directory / "..data_tmp"
    staged.symlink_to(payload.name)
    os.replace(staged, directory / "..data")
    link = directory / "token"
    if not link.is_symlink():
        link.symlink_to("..data/token")
    return link


def test_a_rotated_token_is_sent_from_the_next_request_on(tmp_path: Path) -> None:
    path = project(tmp_path, "first", generation=1)
    tokens = TokenFile(path)
    with health_server() as (port, seen):
        client = ControllerClient(f"http://127.0.0.1:{port}", "n1", token=tokens.get)
        client.health()
        client.health()
        project(tmp_path, "second", generation=2)
        client.health()
    assert [headers["AUTHORIZATION"] for headers in seen] == ["Bearer first", "Bearer first", "Bearer second"]
    assert tokens.reads == 2  # read at start and once after the swap, not per request


def test_a_file_rewritten_in_place_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one")
    tokens = TokenFile(path)
    path.write_text("two-longer")
    assert tokens.get() == "two-longer"


def test_a_token_file_gone_for_a_moment_keeps_the_last_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("kept")
    tokens = TokenFile(path)
    path.unlink()
    assert tokens.get() == "kept"
    path.write_text("back")
    assert tokens.get() == "back"


def test_a_missing_token_file_at_start_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing"):
        TokenFile(tmp_path / "nothing")
