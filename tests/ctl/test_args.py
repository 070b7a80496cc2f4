"""underlayctl's command line: every verb parses, connection settings come from flags, then the
environment, then the lab; errors are one line naming what to fix. No root, no controller."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ctl import main, settings, verbs
from ctl.client import Client, CtlError, Settings

LAB = Settings(url="https://127.0.0.1:6680", token="lab-token", ca_file="/lab/ca.pem", netns="ul1234-mgmt")


def parse(*argv: str) -> argparse.Namespace:
    return main.parser(verbs.load()).parse_args(argv)


def no_lab(state_dir: Path) -> Settings:
    raise CtlError(f"no lab is running under {state_dir}: run `underlay-lab up`")


def test_every_verb_parses_with_the_global_flags() -> None:
    assert set(verbs.load()) == set(verbs.VERBS)
    args = parse("--url", "https://c:6680", "--json", "pods", "web-0", "--node", "node1")
    assert (args.verb, args.pods, args.node, args.json, args.url) == ("pods", ["web-0"], "node1", True, "https://c:6680")
    assert parse("flows", "diff", "--switch", "0x1").switch == "0x1"
    assert parse("flows", "show", "--state", "actual").state == "actual"
    assert parse("graph", "--format", "dot").format == "dot"
    assert parse("-o", "f.svg", "graph").output == Path("f.svg")
    assert parse("pools", "--width", "40").width == 40


def test_a_verb_is_required_and_an_unknown_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["frobnicate"], ["flows", "show", "--state", "wanted"]):
        with pytest.raises(SystemExit) as exit_:
            parse(*argv)
        assert exit_.value.code == 2
    assert "invalid choice: 'wanted'" in capsys.readouterr().err


def test_flags_win_over_the_environment_which_wins_over_the_lab(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    env = {"UNDERLAYCTL_URL": "https://env:1", "UNDERLAYCTL_TOKEN": "from-env", "UNDERLAYCTL_CA_FILE": "/env/ca"}
    flags = parse("--url", "https://flag:2", "--token-file", str(token_file), "nodes")
    assert settings.resolve(flags, env, lab=no_lab) == Settings("https://flag:2", "from-file", "/env/ca", None, 10.0)
    assert settings.resolve(parse("nodes"), env, lab=no_lab) == Settings("https://env:1", "from-env", "/env/ca")
    beside = settings.resolve(parse("nodes"), {}, lab=lambda _: LAB)
    assert beside == Settings(LAB.url, LAB.token, LAB.ca_file, LAB.netns)
    mixed = settings.resolve(parse("--lab", "/x", "--token", "mine", "nodes"), {}, lab=lambda path: LAB)
    assert (mixed.url, mixed.token, mixed.netns) == (LAB.url, "mine", LAB.netns)


def test_without_a_controller_or_a_lab_it_says_what_to_pass() -> None:
    with pytest.raises(CtlError, match=r"no controller given and no lab beside us \(no lab is running under "
                                       r"/run/underlay-lab: run `underlay-lab up`\): pass --url"):
        settings.resolve(parse("nodes"), {}, lab=no_lab)
    with pytest.raises(CtlError, match="no lab is running under /nowhere"):
        settings.resolve(parse("--lab", "/nowhere", "nodes"), {}, lab=no_lab)


def test_unreadable_or_empty_token_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CtlError, match=f"--token-file {tmp_path}/missing: cannot read: No such file"):
        settings.resolve(parse("--url", "https://a:1", "--token-file", str(tmp_path / "missing"), "nodes"), {},
                         lab=no_lab)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(CtlError, match="UNDERLAYCTL_TOKEN_FILE .*/empty: empty"):
        settings.resolve(parse("--url", "https://a:1", "nodes"), {"UNDERLAYCTL_TOKEN_FILE": str(tmp_path / "empty")},
                         lab=no_lab)


@pytest.mark.parametrize("url", ["ftp://a:1", "controller:6680", "https://"])
def test_a_url_that_is_no_api_address(url: str) -> None:
    with pytest.raises(CtlError, match=f"--url {url}: expected https://HOST:PORT"):
        Client(Settings(url))


def test_errors_go_to_stderr_in_one_line_with_the_verb_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main.run(["nodes"], env={}, lab=no_lab) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("underlayctl nodes: no controller given") and err.count("\n") == 1


def test_an_unreachable_controller_is_named_with_what_to_check(capsys: pytest.CaptureFixture[str]) -> None:
    """Port 9 on loopback: nothing listens (discard is not run here), so the connection is refused."""
    assert main.run(["--url", "http://127.0.0.1:9", "--token", "t", "switches"], env={}, lab=no_lab) == 1
    err = capsys.readouterr().err
    assert err == ("underlayctl switches: the controller at http://127.0.0.1:9 is unreachable (Connection refused): "
                   "is it running, and is --url (or UNDERLAYCTL_URL) its API address?\n")
