"""pytest plugin: tests marked `uml` run inside User-Mode Linux and report on the host as usual.

On the host, each selected `uml` test is replaced by a stand-in item that runs no fixtures. The first
stand-in to run boots ONE UML instance for the whole session, which runs
`python -m pytest <the uml node ids>` with UNDERLAY_IN_UML=1. Inside, this plugin leaves the tests
alone, so they run for real with the usual fixtures (the rig: private OVS, namespaces, veth), and
writes every phase report as a JSON line into the host directory named by UNDERLAY_UML_REPORT. Each
stand-in then passes, fails with the traceback from inside, or skips, as its test did.

Load it with `-p deploy.uml.pytest_plugin` or `pytest_plugins` in the root conftest. A missing UML
fails the tests with one line naming the package, never a skip.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from deploy.uml.instance import INNER_HOST_DIR, MissingUml, UmlInstance, UmlResult, find_kernel

if TYPE_CHECKING:
    from _pytest.nodes import Node  # the type pytest declares for marks' nodes; not exported

MARKER = "uml"
IN_UML = "UNDERLAY_IN_UML"  # "1" inside UML: run the marked tests for real
REPORT = "UNDERLAY_UML_REPORT"  # inside UML: where to append the JSON-lines reports
TIMEOUT = "UNDERLAY_UML_TIMEOUT"  # on the host: seconds for the whole UML run (default below)
TIMEOUT_PER_TEST = 90  # default: this many seconds per selected test (a rig test in UML on a loaded host), 300 at least
REPORT_NAME = "reports.jsonl"
DECIDED_INSIDE = ("skip", "skipif", "xfail", "usefixtures", "filterwarnings")  # never acted on twice
RUN_KEY = pytest.StashKey["UmlRun"]()


def in_uml() -> bool:
    return os.environ.get(IN_UML) == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: needs a kernel feature this host lacks (ipvlan); runs inside User-Mode Linux")
    if report := os.environ.get(REPORT):
        config.pluginmanager.register(ReportWriter(Path(report)), "underlay-uml-report-writer")


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: boot UML for the selected tests only
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_uml():
        return
    marked = [item for item in items if item.get_closest_marker(MARKER)]
    if not marked:
        return
    run = config.stash[RUN_KEY] = UmlRun(config.rootpath, [item.nodeid for item in marked])
    items[:] = [UmlStandIn.replacing(item, run) if item.get_closest_marker(MARKER) else item for item in items]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run and run.result:
        boot = f"{run.result.boot_seconds:.1f} s" if run.result.boot_seconds is not None else "unknown"
        terminalreporter.write_line(f"uml: {len(run.nodeids)} test(s) in one instance, boot {boot}, "
                                    f"wall {run.result.wall_seconds:.1f} s")


class FailedInUml(Exception):
    """A test failed inside UML; its message is the inner report, shown as is."""


@dataclass
class UmlRun:
    """One UML instance running all selected `uml` tests, booted when the first stand-in runs."""

    rootpath: Path
    nodeids: list[str]
    result: UmlResult | None = None
    reports: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    error: str | None = None

    def reports_for(self, nodeid: str) -> list[dict[str, Any]]:
        if self.result is None and self.error is None:
            self._boot()
        if self.error:
            pytest.fail(self.error, pytrace=False)
        return self.reports.get(nodeid, [])

    def command(self) -> list[str]:
        return [sys.executable, "-m", "pytest", *self.nodeids, "-p", "deploy.uml.pytest_plugin",
                "-p", "no:cacheprovider", "-q", "--rootdir", str(self.rootpath)]

    def missing(self, nodeid: str) -> str:
        """Why `nodeid` has no result from inside UML, with the end of the console."""
        assert self.result is not None
        why = (f"timed out after {self.result.wall_seconds:.0f} s" if self.result.timed_out
               else f"inner pytest exit status {self.result.returncode}")
        return f"no result for {nodeid} from inside UML ({why}); console:\n{self.result.tail()}"

    def _boot(self) -> None:
        try:
            kernel = find_kernel()
        except MissingUml as missing:
            self.error = str(missing)
            return
        with tempfile.TemporaryDirectory(prefix="underlay-uml-") as workdir:
            instance = UmlInstance(Path(workdir), command=self.command(), cwd=self.rootpath, kernel=kernel, env={
                IN_UML: "1", REPORT: f"{INNER_HOST_DIR}/{REPORT_NAME}",
                "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
            })
            default = max(300, TIMEOUT_PER_TEST * len(self.nodeids))
            self.result = instance.run(timeout=float(os.environ.get(TIMEOUT, default)))
            for record in _read_json_lines(Path(workdir) / REPORT_NAME):
                self.reports.setdefault(record["nodeid"], []).append(record)


class UmlStandIn(pytest.Item):
    """Stands in on the host for a test that runs inside UML, and replays its outcome."""

    def __init__(self, *, run: UmlRun, original: pytest.Item, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.uml_run = run
        self.original = original

    @classmethod
    def replacing(cls, item: pytest.Item, run: UmlRun) -> UmlStandIn:
        assert item.parent is not None, "a collected test always has a parent"
        return cls.from_parent(item.parent, name=item.name, run=run, original=item)

    def runtest(self) -> None:
        reports = self.uml_run.reports_for(self.nodeid)
        if failed := [report for report in reports if report["outcome"] == "failed"]:
            raise FailedInUml("\n\n".join(_describe(report) for report in failed))
        for report in reports:
            if report["outcome"] == "skipped":
                if report["wasxfail"] is not None:
                    pytest.xfail(report["wasxfail"])
                reason = report["reason"].removeprefix("Skipped: ")
                raise pytest.skip.Exception(reason, _use_item_location=True)  # shown at the test, not here
        if not any(report["when"] == "call" for report in reports):
            pytest.fail(self.uml_run.missing(self.nodeid), pytrace=False)

    def iter_markers_with_node(
        self, name: str | None = None,
    ) -> Iterator[tuple[Node, pytest.Mark]]:
        """The original's marks, except those the test already acted on inside (skipif, xfail...)."""
        for node, mark in self.original.iter_markers_with_node(name):
            if mark.name not in DECIDED_INSIDE:
                yield node, mark

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, FailedInUml):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.original.reportinfo()


class ReportWriter:
    """Inside UML: append each phase report to the host's file, one JSON line each, synced at once
    so that a run killed at its timeout still reports the tests it finished."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = {
            "nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
            "longrepr": report.longreprtext, "sections": report.sections,
            "reason": report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longreprtext,
            "wasxfail": getattr(report, "wasxfail", None),
        }
        with open(self.path, "a") as out:
            out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())


def _describe(report: dict[str, Any]) -> str:
    sections = "".join(f"\n----- {title} -----\n{content}" for title, content in report["sections"])
    return f"[inside UML, {report['when']}]\n{report['longrepr']}{sections}"


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The records in `path`; a line cut short by a killed instance is left out."""
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records
