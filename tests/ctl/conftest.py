"""underlayctl's tests reuse the controller tests' builders (tests/controller/ctlfakes.py) to serve a
real REST API without root; tests/ctl/samples.py holds the controller's answers for the pure ones."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "controller"))
