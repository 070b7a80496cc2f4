"""The verbs of underlayctl, one module each: the extension point for a new verb.

A verb module defines
    NAME: str                                    the word on the command line
    HELP: str                                    one line for `underlayctl --help`
    add_arguments(parser) -> None                its own flags and arguments
    fetch(client, args) -> dict                  what it reads from the controller (ctl.client.Client)
    render(data, args, *, now) -> str            the text people read, from what `fetch` returned (pure)
and is listed in VERBS. `--json` prints what `fetch` returned instead of `render`'s text, and
`--output FILE` writes either to FILE, for every verb alike.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
from collections.abc import Callable
from typing import Any, Protocol, cast

from ctl.client import Client

VERBS = ("pods", "nodes", "pools", "switches", "flows", "graph", "trace")


class Verb(Protocol):
    NAME: str
    HELP: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    fetch: Callable[[Client, argparse.Namespace], dict[str, Any]]

    def render(self, data: dict[str, Any], args: argparse.Namespace, *, now: datetime.datetime) -> str: ...


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """`add_arguments` of a verb without flags of its own."""


def reads(path: str) -> Callable[[Client, argparse.Namespace], dict[str, Any]]:
    """`fetch` of a verb whose data is one GET of `path`."""
    def fetch(client: Client, args: argparse.Namespace) -> dict[str, Any]:
        return client.get(path)
    return fetch


def load() -> dict[str, Verb]:
    """Every verb module in VERBS, by its NAME."""
    verbs = [cast(Verb, importlib.import_module(f"ctl.verbs.{name}")) for name in VERBS]
    return {verb.NAME: verb for verb in verbs}
