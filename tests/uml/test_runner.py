"""The pytest runner's bookkeeping, without booting: each outcome inside comes back to the host.

A scratch suite is run by a child pytest whose UmlInstance is replaced by one that runs the inner
command directly on the host (same environment, same report file), so everything but the VM is real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from deploy.uml import pytest_plugin

NO_VM_CONFTEST = """
    import os, subprocess
    from pathlib import Path
    import deploy.uml.pytest_plugin as plugin
    from deploy.uml.instance import INNER_HOST_DIR, Kernel, UmlResult

    class NoVmInstance:
        def __init__(self, workdir, *, command, env, cwd, kernel):
            self.workdir, self.command, self.env, self.cwd = workdir, command, env, cwd

        def run(self, timeout):
            env = {**os.environ, **self.env}
            env[plugin.REPORT] = env[plugin.REPORT].replace(INNER_HOST_DIR, str(self.workdir))
            proc = subprocess.run(self.command, env=env, cwd=self.cwd, capture_output=True, text=True,
                                  timeout=timeout)
            return UmlResult(proc.returncode, proc.stdout, 0.0, 0.0, False)

    plugin.UmlInstance = NoVmInstance
    plugin.find_kernel = lambda: Kernel(Path("/bin/true"), Path("/nonexistent/0"))
"""

MISSING_UML_CONFTEST = """
    import deploy.uml.pytest_plugin as plugin

    def missing():
        raise plugin.MissingUml("/usr/bin/linux.uml not found: install the Debian package user-mode-linux")

    plugin.find_kernel = missing
"""

SUITE = """
    import os
    import pytest

    pytestmark = pytest.mark.uml

    @pytest.fixture
    def broken():
        raise RuntimeError("fixture broke")

    def test_passes():
        assert os.environ["UNDERLAY_IN_UML"] == "1"

    def test_fails():
        print("said before failing")
        assert 1 + 1 == 3

    def test_skips():
        pytest.skip("not today")

    @pytest.mark.xfail(reason="known")
    def test_xfails():
        assert False

    def test_setup_errors(broken):
        pass

    @pytest.mark.skipif(os.environ.get("UNDERLAY_IN_UML") != "1", reason="never on the host")
    def test_only_inside():
        pass
"""


def run_suite(tmp_path: Path, conftest: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(conftest))
    (tmp_path / "test_scratch.py").write_text(textwrap.dedent(SUITE))
    env = {k: v for k, v in os.environ.items() if k not in (pytest_plugin.IN_UML, pytest_plugin.REPORT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "deploy.uml.pytest_plugin", "-p", "no:cacheprovider", "-rA",
         "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_every_outcome_inside_comes_back(tmp_path: Path) -> None:
    out = run_suite(tmp_path, NO_VM_CONFTEST).stdout

    assert "2 failed, 2 passed, 1 skipped, 1 xfailed" in out, out
    assert "PASSED test_scratch.py::test_passes" in out
    assert "PASSED test_scratch.py::test_only_inside" in out
    assert "[inside UML, call]" in out and "assert (1 + 1) == 3" in out and "said before failing" in out
    assert "[inside UML, setup]" in out and "fixture broke" in out
    assert "not today" in out and "XFAIL test_scratch.py::test_xfails" in out


def test_missing_uml_fails_every_uml_test_with_one_line(tmp_path: Path) -> None:
    out = run_suite(tmp_path, MISSING_UML_CONFTEST).stdout

    assert "6 failed" in out, out
    assert out.count("install the Debian package user-mode-linux") >= 6
    assert "Traceback" not in out
