"""`underlayctl trace` of a lab pod, as a user runs it: the lab's controller (`--lab`, which
underlayctl reaches inside the lab's management namespace) and the lab's own Open vSwitch run
directory (`--ovs-rundir`), so packets are traced too. `underlay-lab demo` ends with one."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deploy.lab.lab import Lab

TIMEOUT = 60


def trace_argv(lab: Lab, target: str, *extra: str, json: bool = False) -> list[str]:
    """The command line: `underlayctl --lab STATE_DIR [--json] trace TARGET --ovs-rundir RUNDIR EXTRA...`."""
    return [sys.executable, "-m", "ctl.main", "--lab", str(lab.state_dir), *(["--json"] if json else []), "trace",
            target, "--ovs-rundir", str(lab.rig.ovs.workdir), *extra]


def run_trace(lab: Lab, target: str, *extra: str, json: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(trace_argv(lab, target, *extra, json=json), capture_output=True, text=True, timeout=TIMEOUT)


def demo_trace(lab: Lab, pod: str) -> tuple[bool, str]:
    """The demo's last part: the command, its output, and whether it found `pod` reachable."""
    proc = run_trace(lab, pod)
    shown = ["underlayctl", "--lab", str(lab.state_dir), "trace", pod, "--ovs-rundir", str(lab.rig.ovs.workdir)]
    text = f"$ {' '.join(shown)}\n{proc.stdout.rstrip()}{proc.stderr.rstrip()}"
    return proc.returncode == 0 and "\nverdict: reachable" in proc.stdout, text  # 3: unreachable, flows missing
