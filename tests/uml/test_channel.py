"""The command channel into UML nodes, exercised with its loop running right here (no UML needed):
exit status and output come back, a command past its time is cut off, a silent server is an error."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.uml.channel import TIMED_OUT, ChannelError, call


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Path]:
    server = subprocess.Popen([sys.executable, "-m", "deploy.uml.channel", str(tmp_path)])
    try:
        yield tmp_path
    finally:
        server.kill()
        server.wait()


def test_status_output_stdin_and_environment_come_back(spool: Path) -> None:
    proc = call(spool, ["sh", "-c", 'cat; echo "$WHO"; echo oops >&2; exit 3'], stdin=b"in\n",
                env={"WHO": "node1", "PATH": "/usr/bin:/bin"})

    assert (proc.returncode, proc.stdout, proc.stderr) == (3, b"in\nnode1\n", b"oops\n")
    assert sorted(p.name for p in spool.iterdir()) == ["ready"], "requests and answers are cleaned up"


def test_a_command_past_its_timeout_is_cut_off_and_a_missing_program_is_named(spool: Path) -> None:
    slow = call(spool, ["sleep", "30"], timeout=0.5)
    missing = call(spool, ["no-such-program-here"])

    assert slow.returncode == TIMED_OUT and b"timed out after 0.5 s" in slow.stderr
    assert missing.returncode == 127 and b"no-such-program-here" in missing.stderr


def test_no_server_is_an_error_naming_the_spool(tmp_path: Path) -> None:
    with pytest.raises(ChannelError, match="is the instance running"):
        call(tmp_path, ["true"], timeout=0.2, grace=0.2)
    assert list(tmp_path.iterdir()) == [], "the unanswered request is taken back"
