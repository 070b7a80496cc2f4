"""underlayctl: look inside a running underlay controller through its read-only operator API.

Pods, nodes, pools, switches, flows and a picture of the fabric; the verbs are ctl/verbs/'s modules.

Exit status: 0 done, 1 an error (the message says what to do), 2 a usage error, 3 (`trace`) the
address found unreachable or its flows missing on the switch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ctl import settings, verbs
from ctl.client import Client, CtlError, Settings, in_netns

EPILOG = settings.__doc__ or ""


def parser(known: Mapping[str, verbs.Verb]) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="underlayctl", description=(__doc__ or "").splitlines()[0],
                                  epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_arguments(top)
    output = top.add_argument_group("output (every verb)")
    output.add_argument("--json", action="store_true", help="print the controller's answer as JSON")
    output.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE instead of standard output")
    sub = top.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in known.values():
        verb.add_arguments(sub.add_parser(verb.NAME, help=verb.HELP, description=verb.HELP))
    return top


def run(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None,
        lab: settings.LabSettings = settings.lab_settings, now: Callable[[], datetime.datetime] | None = None) -> int:
    known = verbs.load()
    args = parser(known).parse_args(argv)
    verb = known[args.verb]
    try:
        resolved = settings.resolve(args, os.environ if env is None else env, lab=lab)
        data = verb.fetch(client(resolved), args)
        text = json.dumps(data, indent=2) if args.json else verb.render(
            data, args, now=(now or _utcnow)())
        emit(text, args.output)
    except CtlError as err:
        print(f"underlayctl {verb.NAME}: {err}", file=sys.stderr)
        return 1
    exit_status: Callable[[dict[str, object]], int] | None = getattr(verb, "exit_status", None)
    return exit_status(data) if exit_status else 0


def client(resolved: Settings) -> Client:
    return Client(resolved, connect=in_netns(resolved.netns) if resolved.netns else None)


def emit(text: str, output: Path | None) -> None:
    if output is None:
        print(text)
        return
    try:
        output.write_text(text if text.endswith("\n") else text + "\n")
    except OSError as err:
        raise CtlError(f"--output {output}: cannot write: {err.strerror}") from None
    print(f"wrote {output}", file=sys.stderr)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def main() -> int:
    return run()


if __name__ == "__main__":
    sys.exit(main())
