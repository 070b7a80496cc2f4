"""The plugin's own cost per call: VERSION, and a forwarded ADD against an agent that answers at once.

Run by hand: `.venv/bin/python tests/bench/bench_plugin_start.py [--runs 40] [--bin-dir DIR]`. Not
collected by pytest. Without --bin-dir the plugin is installed from this tree (native forwarder and
Python plugin, as `cni.install` does); with it, the plugin already there is measured, so an install
of another checkout can be compared run for run. Calls are interleaved, one fresh process each, and
the median is reported; a bare `python3 -IS -c pass` is the floor the Python plugin cannot beat.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cni import install  # noqa: E402


def serve_instantly(path: Path) -> None:
    """An agent that reads each call and answers `{}` with status 0: only the plugin is measured."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(64)

    def loop() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                while conn.recv(1 << 16):
                    pass
                conn.sendall(b"\x00{}\n")

    threading.Thread(target=loop, daemon=True).start()


def timed(argv: list[str], stdin: bytes, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{argv} failed: {proc.stdout.decode()} {proc.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--bin-dir", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        bin_dir = args.bin_dir or install.install_binary(tmp / "bin").parent
        serve_instantly(tmp / "agent.sock")
        conf = json.dumps({"cniVersion": "1.0.0", "name": "underlay", "type": "underlay", "master": "eth0",
                           "agentSocket": str(tmp / "agent.sock")}).encode()
        env = {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0", "CNI_PATH": "/tmp"}
        cases = {
            "python3 -IS -c pass (floor)": (["/usr/bin/python3", "-IS", "-c", "pass"], "VERSION"),
            "python plugin VERSION": ([str(bin_dir / "underlay.py")], "VERSION"),
            "python plugin ADD, forwarded": ([str(bin_dir / "underlay.py")], "ADD"),
            "native forwarder VERSION": ([str(bin_dir / "underlay")], "VERSION"),
            "native forwarder ADD, forwarded": ([str(bin_dir / "underlay")], "ADD"),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for run in range(args.runs + 3):
            for name, (argv, command) in cases.items():
                elapsed = timed(argv, conf, dict(env, CNI_COMMAND=command))
                if run >= 3:  # warm-up
                    samples[name].append(elapsed)
        for name, times in samples.items():
            print(f"{name:34} median {statistics.median(times) * 1000:6.2f} ms   "
                  f"min {min(times) * 1000:6.2f} ms   ({len(times)} runs)")


if __name__ == "__main__":
    main()
