"""`underlay-lab` as a user runs it, for the lab's end-to-end tests (imported by them)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LabCli = Callable[..., subprocess.CompletedProcess[str]]


def lab_argv(state_dir: Path) -> list[str]:
    return [sys.executable, "-m", "deploy.lab.cli", "--state-dir", str(state_dir)]


def lab_cli(state_dir: Path, *, timeout: float = 180) -> LabCli:
    """run("up", "--nodes", "2") runs `underlay-lab --state-dir STATE_DIR up --nodes 2`; a non-zero
    exit fails with the command's output unless check=False."""
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*lab_argv(state_dir), *args], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"underlay-lab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc
    return run


@contextlib.contextmanager
def running_lab(state_dir: Path, *up_args: str, timeout: float = 300) -> Iterator[LabCli]:
    """A lab brought up with `underlay-lab up UP_ARGS` for the body, taken down after it even when `up`
    failed half-way; the runner's `state_dir` attribute is `state_dir`."""
    run = lab_cli(state_dir, timeout=timeout)
    run.state_dir = state_dir  # type: ignore[attr-defined]
    try:
        run("up", *up_args)
        yield run
    finally:
        run("down", check=False)


def status(lab: LabCli) -> dict[str, Any]:
    """`underlay-lab status --json`, decoded."""
    result: dict[str, Any] = json.loads(lab("status", "--json").stdout)
    return result


def run_at_once(state_dir: Path, commands: list[tuple[str, ...]], *,
                timeout: float = 300) -> list[subprocess.CompletedProcess[str]]:
    """Start every `underlay-lab` command at once (as a shell loop with `&` does), then wait for all."""
    procs = [subprocess.Popen([*lab_argv(state_dir), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for args in commands]
    outputs = [proc.communicate(timeout=timeout) for proc in procs]
    return [subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            for proc, (out, err) in zip(procs, outputs)]
