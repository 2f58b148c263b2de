"""The git revision a run compares against: resolve it, materialise its files, remove them.

The baseline revision (REV) is any revision git understands (``origin/main``, a tag,
``HEAD~1``). It reaches git only as a revision argument of a command list (never through a shell,
after ``--end-of-options``), and a value starting with ``-`` is refused, so a CI variable cannot
smuggle in an option. The files of REV are written with ``git archive`` into a temporary
directory outside the repository: the user's checkout, index and worktree list are never touched.
Submodules and untracked build products (compiled extensions) are not part of an archive.

Pytest-free; errors are :class:`RevisionError` (a ``ValueError``) whose message names REV and the
fix, which the pytest glue turns into a usage error.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT_S = 120.0


class RevisionError(ValueError):
    """REV cannot be compared against: not a repository, unknown, or missing from a shallow clone.
    The message says which and how to fix it."""


@dataclass(frozen=True)
class Revision:
    """A resolved revision of the repository at ``repo_root``.

    name: as the user wrote it; commit: its full commit id; head: the working tree's HEAD commit;
    dirty: the working tree differs from HEAD (tracked changes or untracked, unignored files).
    """

    name: str
    commit: str
    repo_root: Path
    head: str
    dirty: bool

    @property
    def same_as_working_tree(self) -> bool:
        """REV is HEAD and nothing is uncommitted: both sides run the same code (an A/A run)."""
        return self.commit == self.head and not self.dirty

    @property
    def short(self) -> str:
        return self.commit[:12]

    def describe(self) -> str:
        """One line for the header: which code each side runs."""
        shown = self.name if self.name.startswith(self.short) else f"{self.name} ({self.short})"
        tree = "the working tree" + (" with uncommitted changes" if self.dirty else "")
        line = f"{tree} against {shown}"
        if self.same_as_working_tree:
            line += ": REV is HEAD and the tree is clean, an A/A run (both sides run the same code)"
        return line


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=GIT_TIMEOUT_S, check=False)


def check_name(rev: str) -> str:
    """The revision as given, stripped; ``RevisionError`` for an empty value or a leading ``-``."""
    name = rev.strip()
    if not name:
        raise RevisionError("the baseline revision is empty; give a git revision such as "
                            "origin/main, a tag or HEAD~1")
    if name.startswith("-"):
        raise RevisionError(f"the baseline revision {name!r} starts with '-'; a revision never "
                            "does (refused so that it cannot be read as a git option)")
    if any(ch in name for ch in "\0\n\r"):
        raise RevisionError(f"the baseline revision {name!r} contains a control character")
    return name


def resolve(rev: str, where: str | os.PathLike[str]) -> Revision:
    """Resolve ``rev`` in the repository containing ``where``.

    Raises :class:`RevisionError` when git is missing, ``where`` is not in a git work tree, or
    ``rev`` is not a commit there (with the ``git fetch`` / ``fetch-depth: 0`` fix for shallow
    clones and unfetched branches)."""
    name = check_name(rev)
    start = Path(where)
    try:
        top = _git(["rev-parse", "--show-toplevel"], start)
    except FileNotFoundError:
        raise RevisionError(f"cannot compare against {name!r}: git is not installed") from None
    if top.returncode != 0:
        raise RevisionError(f"cannot compare against {name!r}: {start} is not inside a git "
                            f"repository ({top.stderr.strip() or 'git rev-parse failed'})")
    root = Path(top.stdout.strip()).resolve()
    found = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}"],
                 root)
    if found.returncode != 0:
        shallow = _git(["rev-parse", "--is-shallow-repository"], root).stdout.strip() == "true"
        hint = ("this is a shallow clone: fetch the history, e.g. actions/checkout with "
                "`fetch-depth: 0`, or `git fetch --unshallow`" if shallow else
                "check the spelling, or fetch it first, e.g. `git fetch origin main` for "
                "origin/main")
        raise RevisionError(f"the baseline revision {name!r} is not a commit of the repository "
                            f"at {root}: {hint}")
    head = _git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], root)
    status = _git(["status", "--porcelain", "--untracked-files=normal"], root)
    return Revision(name=name, commit=found.stdout.strip(), repo_root=root,
                    head=head.stdout.strip(), dirty=bool(status.stdout.strip()))


# Both sides import the repository from a copy whose path has the same length (a folder named
# ``mmperf-<side>-<8 random characters>``): a process's layout (environment, paths, the
# allocations made while importing) shifts what a call costs by several per cent, the same
# way for every process of one side, which would bias the comparison instead of averaging out.
COPY_PREFIX = {"head": "mmperf-head-", "rev": "mmperf-base-"}


def copy_dir(side: str, parent: str | os.PathLike[str] | None = None) -> Path:
    """A new, empty temporary directory for ``side``'s copy (``head`` or ``rev``); both kinds of
    name have the same length."""
    return Path(tempfile.mkdtemp(prefix=COPY_PREFIX[side], dir=parent))


def materialise(revision: Revision, parent: str | os.PathLike[str] | None = None) -> Path:
    """Write the files of ``revision`` into a new temporary directory (outside the repository)
    and return it. The caller removes it with :func:`remove`."""
    target = copy_dir("rev", parent)
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", revision.commit],
                                 cwd=revision.repo_root, capture_output=True,
                                 timeout=GIT_TIMEOUT_S, check=False)
        if archive.returncode != 0:
            raise RevisionError(f"git archive {revision.name} failed: "
                                f"{archive.stderr.decode(errors='replace').strip()}")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            try:
                tar.extractall(target, filter="data")
            except TypeError:  # Python before 3.10.12 / 3.11.4: no filters (our own archive)
                tar.extractall(target)  # noqa: S202
    except BaseException:
        remove(target)
        raise
    return target


def copy_working_tree(repo_root: str | os.PathLike[str], files: frozenset[str],
                      parent: str | os.PathLike[str] | None = None) -> Path:
    """Copy the working tree's own ``files`` (relative paths, as
    :func:`repository_files` lists them), uncommitted changes included, into a new temporary
    directory: the working tree's side imports from there, exactly as REV's side imports from
    its copy."""
    root, target = Path(repo_root), copy_dir("head", parent)
    try:
        for rel in sorted(files):
            source = root / rel
            if source.is_file():
                destination = target / rel
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination, follow_symlinks=False)
    except BaseException:
        remove(target)
        raise
    return target


def remove(path: str | os.PathLike[str]) -> None:
    """Remove a materialised revision (missing is fine)."""
    shutil.rmtree(path, ignore_errors=True)


def repository_files(repo_root: str | os.PathLike[str]) -> frozenset[str]:
    """Paths (relative, ``/``-separated) of the working tree's own files: tracked, or untracked
    but not ignored. A virtual environment or build folder inside the repository is not part of
    it, so its modules are never redirected."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                              "-z"], cwd=repo_root, capture_output=True, timeout=GIT_TIMEOUT_S,
                             check=False)
    return frozenset(p for p in listing.stdout.decode(errors="replace").split("\0") if p)
