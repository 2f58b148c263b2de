"""The fork server that timing-guard workers start from: runs pytest in forked children, reports
exit codes and output, kills a child that overruns, and fails over cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mmperf.forkserver import ForkServer, ForkServerError, fork_available

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
    srv = ForkServer(sys.executable, root)
    yield srv, root
    srv.close()


def test_children_run_pytest_with_their_environment(server, tmp_path: Path) -> None:
    srv, root = server
    out = tmp_path / "out.log"
    env = {**os.environ, "MMPERF_PROBE": "42"}
    code = srv.run(["test_probe.py::test_env", "-q", "-s", "-p", "no:cacheprovider"], env=env,
                   output=str(out), timeout_s=120)
    text = out.read_text()
    assert code == 0, text
    assert "1 passed" in text and f"pid {os.getpid()}" not in text
    assert srv.start_s is not None and srv.start_s > 0
    code = srv.run(["test_probe.py::test_env", "-q", "-p", "no:cacheprovider"],
                   env=dict(os.environ), output=str(out), timeout_s=120)
    assert code == 1 and "KeyError" in out.read_text()  # no MMPERF_PROBE in that child


def test_overrunning_child_is_killed_and_the_server_goes_on(server, tmp_path: Path) -> None:
    srv, _ = server
    with pytest.raises(subprocess.TimeoutExpired):
        srv.run(["test_probe.py::test_slow", "-q", "-p", "no:cacheprovider"],
                env=dict(os.environ), output=str(tmp_path / "slow.log"), timeout_s=3)
    env = {**os.environ, "MMPERF_PROBE": "42"}
    assert srv.run(["test_probe.py::test_env", "-q", "-p", "no:cacheprovider"], env=env,
                   output=str(tmp_path / "again.log"), timeout_s=120) == 0
    assert not srv.broken


def test_a_server_that_cannot_start_is_marked_broken(tmp_path: Path) -> None:
    srv = ForkServer(str(tmp_path / "no-such-python"), tmp_path)
    with pytest.raises(ForkServerError, match="could not start"):
        srv.run(["-q"], env=dict(os.environ), output=str(tmp_path / "x.log"), timeout_s=5)
    assert srv.broken
    with pytest.raises(ForkServerError, match="failed earlier"):
        srv.run(["-q"], env=dict(os.environ), output=str(tmp_path / "x.log"), timeout_s=5)
