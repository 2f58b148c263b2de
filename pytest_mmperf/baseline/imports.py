"""In a baseline process: the repository's modules come from REV's files, the tests from the
working tree.

:class:`RevisionImports` is a meta path finder placed first on ``sys.meta_path`` before any
conftest or test module is imported. Whatever another finder would load from the repository
(root-dir packages, ``src/`` layouts, editable installs alike) it loads from the same place in
REV's copy instead, except the test side: files pytest collects (``python_files`` patterns,
``conftest.py``) and the packages that contain the test being run. A module the repository has
now but REV does not is reported missing (the comparison is then ``new``), never taken from the
working tree. :meth:`RevisionImports.leaks` lists repository modules that were loaded from the
working tree anyway (imported before the finder was installed): a comparison with such a leak
would silently measure the working tree twice, so the caller treats it as an error.
"""

from __future__ import annotations

import fnmatch
import importlib.abc
import importlib.machinery
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

# Always loaded from where it is installed: the measuring machinery itself.
INFRASTRUCTURE = ("pytest_mmperf",)
DEFAULT_TEST_PATTERNS = ("test_*.py", "*_test.py")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class RevisionImports(importlib.abc.MetaPathFinder):
    """Redirect the repository at ``repo_root`` to REV's copy at ``rev_root``.

    repo_files: the repository's own files (relative paths, see
    :func:`pytest_mmperf.baseline.revision.repository_files`); anything else under the root (a
    virtual environment, build output) is left alone. test_patterns: pytest's ``python_files``.
    test_file: the test being run (absolute); the packages above it stay in the working tree.
    """

    def __init__(self, repo_root: str | os.PathLike[str], rev_root: str | os.PathLike[str],
                 repo_files: Iterable[str], *, test_patterns: Sequence[str] = DEFAULT_TEST_PATTERNS,
                 test_file: str | os.PathLike[str] | None = None) -> None:
        self.repo_root = Path(repo_root).resolve()
        self.rev_root = Path(rev_root).resolve()
        self.repo_files = frozenset(repo_files)
        self.test_patterns = tuple(test_patterns) or DEFAULT_TEST_PATTERNS
        self.test_packages: frozenset[Path] = frozenset()
        if test_file is not None:
            path = Path(test_file).resolve()
            self.test_packages = frozenset(
                p for p in path.parents if _inside(p, self.repo_root) and p != self.repo_root
                and (p / "__init__.py").exists())
        self.redirected: dict[str, str] = {}  # module name -> file loaded from REV
        self.missing: list[str] = []  # repository modules REV does not have
        self._busy = threading.local()

    # ------------------------------------------------------------------ the finder
    def install(self) -> RevisionImports:
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)
        return self

    def uninstall(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if getattr(self._busy, "on", False):
            return None
        self._busy.on = True
        try:
            return self._find(fullname, path, target)
        finally:
            self._busy.on = False

    def _find(self, fullname: str, path: Sequence[str] | None,
              target: ModuleType | None) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] in INFRASTRUCTURE:
            return None
        if path and all(_inside(Path(p).resolve(), self.rev_root) for p in path):
            # a submodule of a package already loaded from REV: REV's or nothing (never a
            # fallback finder, such as an editable install's, that maps it to the working tree)
            spec = importlib.machinery.PathFinder.find_spec(fullname, list(path), target)
            if spec is None:
                self._missing(fullname)
            return spec
        spec = self._other_finders(fullname, path, target)
        if spec is None:
            return None
        entries = self._search_entries(spec)
        if not entries or not self._is_repository_code(spec):
            return None
        mapped = [str(self.rev_root / e.relative_to(self.repo_root)) for e in entries]
        found = importlib.machinery.PathFinder.find_spec(fullname, mapped, target)
        if found is None:
            self._missing(fullname)
            return None  # not reached: _missing raises
        self.redirected[fullname] = str(found.origin or found.submodule_search_locations)
        return found

    def _missing(self, fullname: str) -> None:
        self.missing.append(fullname)
        raise ModuleNotFoundError(f"No module named {fullname!r} at the baseline revision "
                                  f"(the working tree has it; the comparison is 'new')",
                                  name=fullname)

    def _other_finders(self, fullname: str, path: Sequence[str] | None,
                       target: ModuleType | None) -> importlib.machinery.ModuleSpec | None:
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def _search_entries(self, spec: importlib.machinery.ModuleSpec) -> list[Path]:
        """The import path entries (inside the repository) the module was found under."""
        if spec.origin and spec.has_location:
            origin = Path(spec.origin).resolve()
            if not _inside(origin, self.repo_root):
                return []
            package = spec.submodule_search_locations is not None
            return [origin.parent.parent if package else origin.parent]
        locations = [Path(p).resolve() for p in spec.submodule_search_locations or ()]
        return [p.parent for p in locations if _inside(p, self.repo_root)]  # namespace package

    def _is_repository_code(self, spec: importlib.machinery.ModuleSpec) -> bool:
        if spec.origin and spec.has_location:
            return self.is_repository_file(Path(spec.origin)) and not self.is_test_side(
                Path(spec.origin))
        # a namespace package: repository code if any of its folders holds repository files
        return any(self._holds_repository_files(Path(p))
                   for p in spec.submodule_search_locations or ())

    def _holds_repository_files(self, folder: Path) -> bool:
        try:
            rel = folder.resolve().relative_to(self.repo_root).as_posix() + "/"
        except ValueError:
            return False
        return any(f.startswith(rel) for f in self.repo_files)

    # ------------------------------------------------------------------ classification
    def is_repository_file(self, file: Path) -> bool:
        try:
            rel = file.resolve().relative_to(self.repo_root).as_posix()
        except ValueError:
            return False
        return rel in self.repo_files

    def is_test_side(self, file: Path) -> bool:
        """Test files, conftest files and the packages containing the test stay in the working
        tree."""
        resolved = file.resolve()
        name = resolved.name
        if name == "conftest.py":
            return True
        rel = resolved.relative_to(self.repo_root).as_posix() \
            if _inside(resolved, self.repo_root) else name
        if any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p) for p in self.test_patterns):
            return True
        return name == "__init__.py" and resolved.parent in self.test_packages

    def leaks(self, modules: dict[str, Any] | None = None) -> list[tuple[str, str]]:
        """Repository modules that were loaded from the working tree: (name, file)."""
        found = []
        for name, module in list((sys.modules if modules is None else modules).items()):
            file = getattr(module, "__file__", None)
            if not file or name.split(".")[0] in INFRASTRUCTURE:
                continue
            path = Path(file)
            if _inside(path.resolve(), self.repo_root) and self.is_repository_file(path) \
                    and not self.is_test_side(path):
                found.append((name, str(path)))
        return sorted(found)
