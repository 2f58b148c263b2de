"""Which collected tests are timing tests: they call a timing guard, directly or through helpers.

``pytest --benchmark`` keeps timing tests and ``-m "not mmperf_timing"`` drops them, so they must
be known at collection, before anything runs. A test is a timing test when its source, the source
of the fixtures it uses, or (recursively) the source of a function it calls that is defined in
the user's repository (the test module, a conftest, any helper module under the rootdir) contains
a call of a timing guard or report measurement:

* ``.faster(...)``, ``.not_slower(...)``, ``.family(...)`` (``mmperf_report``);
* ``.scaling(...)`` unless its ``metric=`` / ``metrics=`` argument is a literal without
  ``"time"`` (both guards' and the report's ``scaling`` measure time by default).

Calls the analysis cannot follow (a guard passed around as a value and called from a library,
code built at run time) are caught at run time instead: the guard fails the test with a message
naming the marker to add (:mod:`pytest_mmperf.glue.guard_fixture`). Torch-free, pytest-free.
"""

from __future__ import annotations

import ast
import inspect
import os
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

TIMING_METHODS = frozenset({"faster", "not_slower", "family"})
SCALING_METHODS = frozenset({"scaling"})
MAX_DEPTH = 6
# Functions of these packages are never the user's helpers.
_LIBRARY_PREFIXES = ("pytest_mmperf", "_pytest", "pytest", "pluggy")


class TimingDetector:
    """Decides, with a cache shared by the session, whether functions call timing guards.

    ``root``: the repository whose functions may be followed (pytest's rootdir).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._cache: dict[Any, bool] = {}
        self._site = tuple(str(Path(p).resolve()) for p in _site_dirs())

    def any_calls_timing(self, functions: Iterable[Callable[..., Any]]) -> bool:
        """Whether one of ``functions`` (a test function and its fixture functions) calls a
        timing guard, directly or through user helpers."""
        return any(self.calls_timing(f) for f in functions)

    def calls_timing(self, function: Callable[..., Any], depth: int = 0) -> bool:
        function = inspect.unwrap(getattr(function, "__func__", function))
        key = getattr(function, "__code__", function)
        if key in self._cache:
            return self._cache[key]
        self._cache[key] = False  # recursion guard: a cycle adds nothing
        result = False
        tree = _parse(function)
        if tree is not None:
            scope = getattr(function, "__globals__", {})
            for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
                if _is_timing_call(call):
                    result = True
                    break
                if depth < MAX_DEPTH:
                    callee = _resolve(call.func, scope)
                    if callee is not None and self._is_user_function(callee) \
                            and self.calls_timing(callee, depth + 1):
                        result = True
                        break
        self._cache[key] = result
        return result

    def _is_user_function(self, function: Any) -> bool:
        """A plain Python function defined in a file under the root, outside site-packages and
        outside pytest and this plugin."""
        function = inspect.unwrap(getattr(function, "__func__", function))
        if not inspect.isfunction(function):
            return False
        module = getattr(function, "__module__", "") or ""
        if module.split(".", 1)[0] in _LIBRARY_PREFIXES:
            return False
        try:
            path = Path(function.__code__.co_filename).resolve()
        except (OSError, ValueError):
            return False
        text = str(path)
        return path.is_relative_to(self.root) and not any(text.startswith(s) for s in self._site)


def _site_dirs() -> list[str]:
    import site
    import sysconfig

    dirs = [sysconfig.get_paths().get(k, "") for k in ("purelib", "platlib")]
    try:
        dirs += site.getsitepackages()
    except AttributeError:  # virtualenv's old site module
        pass
    return [d for d in dirs if d]


def _parse(function: Callable[..., Any]) -> ast.AST | None:
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):  # built at run time, or only bytecode: the run-time check acts
        return None
    try:
        return ast.parse(source)
    except SyntaxError:  # a lambda's source line may not parse alone
        try:
            return ast.parse(f"(\n{source}\n)")
        except SyntaxError:
            return None


def _literal_strings(node: ast.AST) -> set[str] | None:
    """The strings of a literal ``"time"`` / ``("time", "memory")``; None when not a literal."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, str):
        return {value}
    if isinstance(value, (tuple, list, set, frozenset)) and all(isinstance(v, str) for v in value):
        return set(value)
    return None


def _is_timing_call(call: ast.Call) -> bool:
    func = call.func
    if not isinstance(func, ast.Attribute):
        return False
    if func.attr in TIMING_METHODS:
        return True
    if func.attr not in SCALING_METHODS:
        return False
    for kw in call.keywords:
        if kw.arg in ("metric", "metrics"):
            values = _literal_strings(kw.value)
            return values is None or "time" in values
    if len(call.args) >= 3:  # guard.scaling(fn_of_size, sizes, metric, ...)
        values = _literal_strings(call.args[2])
        return values is None or "time" in values
    return True  # the default metric is time


def _resolve(func: ast.expr, scope: dict[str, Any]) -> Any:
    """The object a call's ``f`` / ``module.f`` / ``module.sub.f`` names in ``scope``."""
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    obj = scope.get(func.id)
    for attr in reversed(parts):
        if obj is None or not (inspect.ismodule(obj) or inspect.isclass(obj)):
            return None
        obj = getattr(obj, attr, None)
    return obj
