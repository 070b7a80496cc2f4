"""Where the controller is and which token to show: flags, then the environment, then the lab.

    --url            UNDERLAYCTL_URL         https://HOST:PORT of the controller's API
    --token          UNDERLAYCTL_TOKEN       an operator token (a flag shows in `ps`: prefer a file)
    --token-file     UNDERLAYCTL_TOKEN_FILE  a file holding it
    --ca-file        UNDERLAYCTL_CA_FILE     the CA that signed the API's certificate
    --netns          UNDERLAYCTL_NETNS       connect from inside this network namespace
    --lab DIR        UNDERLAYCTL_LAB         a lab's state directory: all of the above from the lab

Without --url, a lab running beside us (`underlay-lab up`, default state directory) is used.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path

from ctl.client import CtlError, Settings

DEFAULT_LAB = Path("/run/underlay-lab")
LabSettings = Callable[[Path], Settings]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (flags, else UNDERLAYCTL_* variables, else the lab beside us)")
    group.add_argument("--url", help="the controller's API, https://HOST:PORT (UNDERLAYCTL_URL)")
    group.add_argument("--token", help="an operator token (UNDERLAYCTL_TOKEN; visible in ps: prefer --token-file)")
    group.add_argument("--token-file", type=Path, help="a file holding an operator token (UNDERLAYCTL_TOKEN_FILE)")
    group.add_argument("--ca-file", type=Path, help="the CA of the API's certificate (UNDERLAYCTL_CA_FILE)")
    group.add_argument("--netns", help="connect from inside this network namespace (UNDERLAYCTL_NETNS; root)")
    group.add_argument("--lab", type=Path, metavar="STATE_DIR",
                       help=f"the controller of the lab under STATE_DIR (UNDERLAYCTL_LAB; default {DEFAULT_LAB} "
                            "when no --url is given and a lab runs there)")
    group.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the controller (10)")


def resolve(args: argparse.Namespace, env: Mapping[str, str], *, lab: LabSettings) -> Settings:
    """The settings the flags and `env` give, filled in from a lab where they leave gaps."""
    url = args.url or env.get("UNDERLAYCTL_URL")
    lab_dir = args.lab or (Path(env["UNDERLAYCTL_LAB"]) if env.get("UNDERLAYCTL_LAB") else None)
    base = None
    if lab_dir is not None or url is None:
        try:
            base = lab(lab_dir or DEFAULT_LAB)
        except CtlError as err:
            if lab_dir is not None:
                raise
            raise CtlError(f"no controller given and no lab beside us ({err}): pass --url https://HOST:PORT "
                           "(or UNDERLAYCTL_URL), or --lab STATE_DIR") from None
    token = args.token or _read(args.token_file, "--token-file") or env.get("UNDERLAYCTL_TOKEN") or _read(
        Path(env["UNDERLAYCTL_TOKEN_FILE"]) if env.get("UNDERLAYCTL_TOKEN_FILE") else None, "UNDERLAYCTL_TOKEN_FILE")
    ca_file = args.ca_file or env.get("UNDERLAYCTL_CA_FILE")
    netns = args.netns or env.get("UNDERLAYCTL_NETNS")
    return Settings(
        url=url or (base.url if base else ""), token=token or (base.token if base else None),
        ca_file=str(ca_file) if ca_file else (base.ca_file if base else None),
        netns=netns or (base.netns if base else None), timeout=args.timeout)


def _read(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as err:
        raise CtlError(f"{what} {path}: cannot read: {err.strerror}") from None
    if not token:
        raise CtlError(f"{what} {path}: empty: it should hold an operator token")
    return token.splitlines()[0].strip()


def lab_settings(state_dir: Path) -> Settings:
    """The lab's controller: its URL, CA, operator token and management namespace."""
    from deploy.lab.lab import Lab, LabError  # the lab's code: only when a lab is used

    lab = Lab(state_dir, progress=lambda _: None)
    try:
        controller = lab.controller()
    except LabError as err:
        raise CtlError(str(err)) from None
    except OSError as err:
        raise CtlError(f"the lab under {state_dir} cannot be read: {err}") from None
    if not controller.operator_token_file.exists():
        raise CtlError(f"the lab under {state_dir} has no operator token (it predates underlayctl): run "
                       "`underlay-lab up` again")
    return Settings(url=controller.url, token=controller.operator_token,
                    ca_file=None if controller.ca_file is None else str(controller.ca_file), netns=controller.ns)
