"""The oldest versions the wheel admits, installed and used: its lower bounds are tested.

Each ``Requires-Dist: name>=X`` of the wheel becomes the constraint ``name==X``, and pip resolves
the wheel's requirements with those constraints into a fresh virtual environment: the run below
uses exactly the oldest pytest, pluggy, pytest-benchmark, numpy and Pillow the metadata admits
(pip proves them installable together, and fails the test when a bound names a version that does
not exist or cannot go with the others). The packages come from the index (PyPI).

torch is borrowed, not installed (that costs minutes and gigabytes): this environment's torch and
the distributions it requires are linked into one folder that a ``.pth`` file puts on the new
environment's path. Nothing else of this environment is visible there (no torchvision, no
pytest-xdist, not this checkout), so the run is also that of a user without torchvision.

A user's repository (no conftest, an ini file) then runs counter guards, a snapshot, the data
fixtures, a timing guard with an obvious 4x difference and a pytest-benchmark test, and a
``pytest --benchmark`` run over a ``--benchmark-disable`` in addopts.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import pytest_mmperf

BORROWED = "torch"

USER_TESTS = '''
import importlib.util

import pytest
import torch

from pytest_mmperf import GuardFailure  # noqa: F401  (public names load from the wheel)

X = torch.randn(4096)


def adds(n):
    def fn():
        for _ in range(n):
            torch.add(X, 1.0)
    return fn


def test_counter_guards(mmperf_guard):
    mmperf_guard.max_ops(adds(25), {"add": 25})
    with pytest.raises(AssertionError):
        mmperf_guard.max_ops(adds(50), {"add": 25})


def test_snapshot(mmperf_guard):
    mmperf_guard.snapshot("adds", adds(25))  # ops, FLOPs and peak memory


def test_timing_guard(mmperf_guard):
    mmperf_guard.faster(adds(100), adds(400), at_least=1.5)


def test_batch(mmperf_batch, mmperf_device):
    assert len(mmperf_batch.images) == mmperf_batch.spec.batch_size
    assert mmperf_batch.input_ids.shape[0] == len(mmperf_batch.images)
    assert mmperf_device.type == "cpu"


def test_features_and_jpegs(mmperf_features, mmperf_jpeg_dataset):
    from PIL import Image

    assert mmperf_features.image_tokens.ndim == 3
    assert len(mmperf_jpeg_dataset) == len(mmperf_jpeg_dataset.captions) > 0
    with Image.open(mmperf_jpeg_dataset.paths[0]) as image:
        assert image.format == "JPEG"


def test_benchmark(benchmark, mmperf_batch, mmperf_device):
    benchmark(adds(10))


def test_where_things_come_from():
    import pytest_mmperf

    assert "site-packages" in pytest_mmperf.__file__, pytest_mmperf.__file__
    assert importlib.util.find_spec("reference") is None
    assert importlib.util.find_spec("torchvision") is None
'''

USER_INI = """
[pytest]
addopts = --benchmark-disable
mmperf_seed = 7
"""


def _lower_bounds(wheel: Path) -> dict[str, Version]:
    """The wheel's requirements (extras left out) -> their lower bounds."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        info = email.parser.Parser().parsestr(archive.read(name).decode())
    bounds: dict[str, Version] = {}
    for line in info.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{line}: one lower bound (>=) expected"
        bounds[canonicalize_name(requirement.name)] = Version(lower[0])
    return bounds


def _closure(name: str) -> dict[str, metadata.Distribution]:
    """Installed distributions ``name`` requires here, transitively (markers and extras
    evaluated; what is not installed here, such as CUDA libraries a CPU run never loads, is
    left out)."""
    found: dict[str, metadata.Distribution] = {}
    pending, visited = [(name, frozenset[str]())], set()
    while pending:
        item = pending.pop()
        if item in visited:
            continue
        visited.add(item)
        try:
            dist = metadata.distribution(item[0])
        except metadata.PackageNotFoundError:
            continue
        found.setdefault(canonicalize_name(item[0]), dist)
        for line in dist.requires or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in ("", *item[1])):
                pending.append((requirement.name, frozenset(requirement.extras)))
    return found


def _borrow(name: str, folder: Path) -> list[str]:
    """Link ``name`` and what it requires (their packages and dist-info) into ``folder``."""
    folder.mkdir()
    dists = _closure(name)
    for dist in dists.values():
        for top in {f.parts[0] for f in dist.files or ()}:
            if top in ("..", "__pycache__") or top.endswith(".pth") or (folder / top).exists():
                continue
            (folder / top).symlink_to(Path(str(dist.locate_file(top))))
    return sorted(f"{d.metadata['Name']}=={d.version}" for d in dists.values())


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(python), *args],
                          capture_output=True, text=True, timeout=300)


def _installed(python: Path) -> tuple[dict[str, str], str]:
    """The distributions pip sees in that environment (name -> version) and as a listing."""
    listed = _pip(python, "list", "--format=json")
    assert listed.returncode == 0, listed.stderr
    packages = json.loads(listed.stdout)
    listing = "".join(f"{p['name']:<24} {p['version']}\n" for p in packages)
    return {canonicalize_name(p["name"]): p["version"] for p in packages}, listing


@pytest.fixture(scope="module")
def oldest_env(plugin_wheel: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, dict[str, str], str]:
    """(python of a fresh venv with the wheel and the oldest admitted dependencies, the
    versions installed there, its ``pip list``)."""
    bounds = _lower_bounds(plugin_wheel)
    assert BORROWED in bounds and "torchvision" not in bounds, bounds
    root = tmp_path_factory.mktemp("oldest")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"], check=True,
                               capture_output=True, text=True).stdout.strip())
    borrowed = _borrow(BORROWED, root / "borrowed")
    (site / "borrowed-torch.pth").write_text(f"{root / 'borrowed'}\n")
    installed = _pip(python, "install", "-q", "--no-deps", "--no-index", str(plugin_wheel))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # The wheel's requirements but torch (pip would check, and might fetch, torch's own
    # requirements such as CUDA libraries), each held to its lower bound; pip resolves them and
    # what they require together.
    constraints = root / "oldest.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in bounds.items() if n != BORROWED))
    requirements = [f"{n}>={v}" for n, v in bounds.items() if n != BORROWED]
    resolved = _pip(python, "install", "-q", "-c", str(constraints), *requirements)
    versions, listing = _installed(python)
    assert resolved.returncode == 0, (f"pip could not install the oldest versions the wheel "
                                      f"admits:\n{resolved.stdout}{resolved.stderr}\n{listing}")
    report = f"pip list of the fresh environment:\n{listing}\nborrowed: {', '.join(borrowed)}"
    for name, bound in bounds.items():
        assert name in versions, f"{name} missing\n{report}"
        if name == BORROWED:  # borrowed: this environment's version, within the bound
            assert Version(versions[name]) >= bound, report
        else:
            assert Version(versions[name]) == bound, f"{name}: not the oldest\n{report}"
    assert "torchvision" not in versions, report
    print(report)
    return python, versions, report


def _run(python: Path, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_MMPERF_", "PYTEST_ADDOPTS", "PYTEST_PLUGINS",
                                "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTHONPATH"))}
    return subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def test_a_repository_runs_with_the_oldest_versions(
        oldest_env: tuple[Path, dict[str, str], str], tmp_path: Path) -> None:
    python, versions, report = oldest_env
    repo = tmp_path / "user-repo"
    repo.mkdir()
    (repo / "pytest.ini").write_text(textwrap.dedent(USER_INI).lstrip())
    (repo / "test_user.py").write_text(textwrap.dedent(USER_TESTS))

    def check(run: subprocess.CompletedProcess[str], summary: str) -> str:
        out = run.stdout + run.stderr
        assert run.returncode == 0 and re.search(summary, run.stdout), f"{out}\n{report}"
        return out

    # 1. Record the snapshot.
    check(_run(python, repo, "-k", "snapshot", "--mmperf-update-snapshots"), r"\b1 passed\b")
    assert "adds" in json.loads((repo / "mmperf-snapshots.json").read_text())["cases"]

    # 2. Everything (the snapshot now checked), with the JSON report.
    out = check(_run(python, repo, "--mmperf-budget=0.3", "--mmperf-processes=2",
                     "--mmperf-scale=smoke", "--mmperf-json=report.json", "-rA"),
                r"\b7 passed\b")
    assert (f"pytest-{versions['pytest']}, pluggy-{versions['pluggy']}" in out
            and re.search(rf"plugins:.*benchmark-{versions['pytest-benchmark']}", out)
            and re.search(rf"plugins:.*mmperf-{re.escape(pytest_mmperf.__version__)}", out)), out
    ini = re.escape(str(repo / "pytest.ini"))
    assert re.search(rf"^mmperf: device=auto, seed=7 \(ini file {ini} key mmperf_seed\), "
                     r"scale=smoke \(--mmperf-scale\)$", out, re.MULTILINE), out
    assert re.search(r"^mmperf: replay with: pytest --mmperf-seed=7 ", out, re.MULTILINE), out
    assert re.search(r"^mmperf devices: cpu ", out, re.MULTILINE), out
    assert re.search(r"^mmperf: torch \S+, \d+ threads, CPU ", out, re.MULTILINE), out
    guards = json.loads((repo / "report.json").read_text())["guards"]
    assert sorted((g["kind"], g["verdict"]) for g in guards) == [
        ("faster", "pass"), ("max_ops", "fail"), ("max_ops", "pass"), ("snapshot", "pass")], guards

    # 3. The performance run: benchmark timing on despite --benchmark-disable in addopts.
    check(_run(python, repo, "--benchmark", "-k", "benchmark", "--benchmark-max-time=0.05",
               "--mmperf-json=bench.json"), r"\b1 passed\b")
    (row,) = json.loads((repo / "bench.json").read_text())["benchmarks"]
    assert row["name"] == "test_benchmark[cpu]" and row["median_s"] > 0, row
    assert row["extra_info"]["device"] == "cpu" and row["extra_info"]["images"] > 0, row
