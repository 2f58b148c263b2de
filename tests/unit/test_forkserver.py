"""The fork server that timing-guard workers start from: runs pytest in forked children, reports
exit codes and output, kills a child that overruns, and fails over cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mmperf.timing.forkserver import ForkServer, ForkServerError, fork_available

pytestmark = pytest.mark.skipif(not fork_available(), reason="os.fork is not available here")

TESTS = """
import os, time

def test_env():
    assert os.environ["MMPERF_PROBE"] == "42"
    print("pid", os.getpid())

def test_slow():
    time.sleep(60)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fork")
    (root / "test_probe.py").write_text(TESTS)
    (root / "pytest.ini").write_text("[pytest]\n")
    srv = ForkServer.shared(sys.executable, root)  # the session's own guards may reuse it
    yield srv, root


def test_children_run_pytest_with_their_environment(server, tmp_path: Path) -> None:
    srv, root = server
    out = tmp_path / "out.log"
    env = {**os.environ, "MMPERF_PROBE": "42"}
    code = srv.run(["test_probe.py::test_env", "-q", "-s", "-p", "no:cacheprovider"], env=env,
                   output=str(out), timeout_s=120, cwd=root)
    text = out.read_text()
    assert code == 0, text
    assert "1 passed" in text and f"pid {os.getpid()}" not in text
    assert srv.start_s is not None and srv.start_s > 0
    code = srv.run(["test_probe.py::test_env", "-q", "-p", "no:cacheprovider"],
                   env=dict(os.environ), output=str(out), timeout_s=120, cwd=root)
    assert code == 1 and "KeyError" in out.read_text()  # no MMPERF_PROBE in that child


def test_overrunning_child_is_killed_and_the_server_goes_on(server, tmp_path: Path) -> None:
    srv, root = server
    with pytest.raises(subprocess.TimeoutExpired):
        srv.run(["test_probe.py::test_slow", "-q", "-p", "no:cacheprovider"],
                env=dict(os.environ), output=str(tmp_path / "slow.log"), timeout_s=1.5, cwd=root)
    env = {**os.environ, "MMPERF_PROBE": "42"}
    assert srv.run(["test_probe.py::test_env", "-q", "-p", "no:cacheprovider"], env=env,
                   output=str(tmp_path / "again.log"), timeout_s=120, cwd=root) == 0
    assert not srv.broken


def test_a_server_that_cannot_start_is_marked_broken(tmp_path: Path) -> None:
    srv = ForkServer(str(tmp_path / "no-such-python"), tmp_path)
    with pytest.raises(ForkServerError, match="could not start"):
        srv.run(["-q"], env=dict(os.environ), output=str(tmp_path / "x.log"), timeout_s=5)
    assert srv.broken
    with pytest.raises(ForkServerError, match="failed earlier"):
        srv.run(["-q"], env=dict(os.environ), output=str(tmp_path / "x.log"), timeout_s=5)


def test_children_put_the_requests_pythonpath_on_sys_path(server, tmp_path: Path) -> None:
    """As a new interpreter would: tools/regression_proof.py shadows reference/ this way."""
    srv, _ = server
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "mmperf_probe_module.py").write_text("VALUE = 7\n")
    (tmp_path / "test_imports.py").write_text(
        "def test_imports():\n    import mmperf_probe_module\n"
        "    assert mmperf_probe_module.VALUE == 7\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "lib")}
    out = tmp_path / "out.log"
    code = srv.run(["test_imports.py", "-q", "-p", "no:cacheprovider"], env=env,
                   output=str(out), timeout_s=120, cwd=tmp_path)
    assert code == 0, out.read_text()
    assert str(tmp_path / "lib") not in sys.path  # the server's own process is untouched


def test_a_failing_server_falls_back_to_a_fresh_interpreter(tmp_path: Path) -> None:
    from pytest_mmperf.timing.isolation import run_pytest_command

    (tmp_path / "test_here.py").write_text("def test_here():\n    pass\n")
    broken = ForkServer(str(tmp_path / "no-such-python"), tmp_path)
    code, output = run_pytest_command(
        [sys.executable, "-m", "pytest", "test_here.py", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, env=dict(os.environ), timeout_s=120, server=broken)
    assert broken.broken and code == 0 and "1 passed" in output, output

def test_sessions_of_one_process_share_a_server_and_bring_their_own_directory(
        tmp_path: Path) -> None:
    """pytester's in-process sessions (and tools calling pytest.main) pay the imports once.
    (Last in this file: it closes the module's shared server.)"""
    other = tmp_path / "other"
    other.mkdir()
    (other / "test_here.py").write_text("def test_here():\n    pass\n")
    first = ForkServer.shared(sys.executable, tmp_path)
    assert ForkServer.shared(sys.executable, other) is first
    out = tmp_path / "out.log"
    assert first.run(["test_here.py", "-q", "-p", "no:cacheprovider"], env=dict(os.environ),
                     output=str(out), timeout_s=120, cwd=other) == 0, out.read_text()
    assert "1 passed" in out.read_text()
    first.close()
    first.broken = True  # a failed server is replaced, not handed out again
    replacement = ForkServer.shared(sys.executable, tmp_path)
    assert replacement is not first and not replacement.broken


def test_the_server_knows_pytests_own_plugins() -> None:
    """The one reader of pytest's private ``_pytest.config.default_plugins``: fails when it
    disappears (the server would then leave pytest's plugins to each worker)."""
    from pytest_mmperf.timing.forkserver import _pytest_plugin_modules

    modules = _pytest_plugin_modules()
    assert {"_pytest.python", "_pytest.fixtures", "_pytest.terminal"} <= set(modules), modules
    assert "pytest_mmperf.plugin" in modules  # and the pytest11 entry points
