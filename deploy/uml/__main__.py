"""`python -m deploy.uml [--timeout S] -- COMMAND...`: run one command inside User-Mode Linux.

For what this kernel cannot do (ipvlan): the command runs as root in a fresh UML instance on the
host's own filesystem, in this directory, with the project's venv first on PATH, and sees an empty
/run (so a lab inside uses its own state directory). Its output and UML's console are printed when
it ends; the exit status is the command's (124 when it timed out, as timeout(1) says).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from deploy.uml.instance import MissingUml, UmlInstance

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TIMED_OUT = 124


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.uml", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=600, help="seconds before the instance is killed")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given: python -m deploy.uml -- COMMAND...")
    with tempfile.TemporaryDirectory(prefix="underlay-uml-") as workdir:
        try:
            instance = UmlInstance(Path(workdir), command=command, env={
                "PATH": f"{Path(sys.executable).parent}:{SYSTEM_PATH}", "PYTHONDONTWRITEBYTECODE": "1"})
        except MissingUml as missing:
            print(f"deploy.uml: {missing}", file=sys.stderr)
            return 1
        result = instance.run(timeout=args.timeout)
    print(result.console, end="")
    if result.timed_out:
        print(f"deploy.uml: timed out after {args.timeout:g} s", file=sys.stderr)
        return TIMED_OUT
    return result.returncode if result.returncode is not None else 1


if __name__ == "__main__":
    sys.exit(main())
