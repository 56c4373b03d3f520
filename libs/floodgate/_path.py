"""A request's critical path, written in the budget as an expression over dependency names.

``"max(embed + db, search) + rerank + llm"`` reads: embed then the database, alongside search;
then rerank; then the LLM. `floodgate plan` evaluates it on the dependencies' latencies for an
endpoint's expected latency. Only names, numbers, ``+``, ``*`` and ``max(...)`` are allowed: the
budget file is data, never code.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

__all__ = ["PathError", "evaluate_path", "path_names"]


class PathError(ValueError):
    """The expression uses something other than names, numbers, ``+``, ``*`` and ``max``."""


def _parse(expression: str) -> ast.expr:
    try:
        return ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise PathError(f"not an expression: {expression!r}") from None


def _walk(node: ast.expr, latencies: Mapping[str, float] | None, names: set[str]) -> float:
    if isinstance(node, ast.Name):
        names.add(node.id)
        return 0.0 if latencies is None else latencies[node.id]
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return float(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
        left, right = _walk(node.left, latencies, names), _walk(node.right, latencies, names)
        return left + right if isinstance(node.op, ast.Add) else left * right
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "max"
        and node.args
        and not node.keywords
    ):
        return max(_walk(arg, latencies, names) for arg in node.args)
    raise PathError(
        f"only dependency names, numbers, + , * and max(...) are allowed, not {ast.unparse(node)!r}"
    )


def path_names(expression: str) -> set[str]:
    """The dependency names ``expression`` uses. Raises `PathError`."""
    names: set[str] = set()
    _walk(_parse(expression), None, names)
    return names


def evaluate_path(expression: str, latencies: Mapping[str, float]) -> float:
    """The critical path's duration when each dependency takes ``latencies[name]`` seconds."""
    return _walk(_parse(expression), latencies, set())
