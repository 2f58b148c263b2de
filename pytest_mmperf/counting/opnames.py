"""Operator names in any spelling, and totals of op counts over them.

Counters key ops by their full overload name (``"aten.mm.default"``). Users write ops the way
they read them: ``"mm"``, ``"aten::mm"``, ``"aten.mm"``, ``"aten.mm.default"``,
``"torchvision::nms"``. One matcher serves the counter report, the guards and the asv suite.
Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def canonical_op(name: str) -> str:
    """A user's op name as a packet or overload name: ``"mm"`` / ``"aten::mm"`` -> ``"aten.mm"``,
    ``"aten.mm.default"`` unchanged. Raises ``ValueError`` for an empty or malformed name."""
    if not isinstance(name, str) or not name.strip(".:") or " " in name.strip():
        raise ValueError(f"bad op name {name!r}; expected e.g. 'mm', 'aten::mm', 'aten.mm' or "
                         "'aten.mm.default'")
    text = name.strip().replace("::", ".")
    return text if "." in text else f"aten.{text}"


def op_matches(op: str, wanted: str) -> bool:
    """Whether the counted overload ``op`` (``"aten.mm.default"``) is ``wanted`` (canonical:
    an exact overload, or its packet ``"aten.mm"``; a prefix of another name never matches)."""
    op = op.replace("::", ".")
    return op == wanted or op.rsplit(".", 1)[0] == wanted


def sum_ops(ops: Mapping[str, int], only: Iterable[str] | str | None = None) -> int:
    """Total of ``ops`` counts, or of the ops named in ``only`` (any spelling; the overloads of
    a packet are summed)."""
    if only is None:
        return int(sum(ops.values()))
    wanted = {canonical_op(o) for o in ([only] if isinstance(only, str) else only)}
    return int(sum(n for op, n in ops.items() if any(op_matches(op, w) for w in wanted)))
