"""Parse the official constructor string `ARCroco3DStereo(ARCroco3DStereoConfig(k=v, …))`.

The official loader `eval`s this string from the checkpoint. Here it is parsed with `ast` and only
literal values (numbers, strings, booleans, None, ±inf, tuples and lists of those) are accepted.
"""

from __future__ import annotations

import ast
import math
from typing import Any


class ConstructorError(ValueError):
    pass


_NAMES = {"inf": math.inf, "True": True, "False": False, "None": None}


def _literal(node: ast.AST, key: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand, key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, (ast.Tuple, ast.List)):
        vals = [_literal(e, key) for e in node.elts]
        return tuple(vals) if isinstance(node, ast.Tuple) else vals
    raise ConstructorError(f"argument {key!r}: only literal values are accepted, got {ast.unparse(node)!r}")


def parse_constructor(text: str) -> dict[str, Any]:
    """Return the keyword arguments of `ARCroco3DStereoConfig(...)` in the constructor string."""
    if not isinstance(text, str):
        raise ConstructorError(f"the model constructor must be a string, got {type(text).__name__}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ConstructorError(f"the model constructor string does not parse: {e.msg}") from None
    outer = tree.body
    if not (isinstance(outer, ast.Call) and isinstance(outer.func, ast.Name) and outer.func.id == "ARCroco3DStereo"):
        name = ast.unparse(outer.func) if isinstance(outer, ast.Call) else type(outer).__name__
        raise ConstructorError(f"expected an ARCroco3DStereo(...) model (CUT3R / Human3R), found {name}")
    if len(outer.args) != 1 or outer.keywords:
        raise ConstructorError("expected ARCroco3DStereo(ARCroco3DStereoConfig(...)) with one argument")
    inner = outer.args[0]
    if not (
        isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id == "ARCroco3DStereoConfig"
    ):
        raise ConstructorError("expected ARCroco3DStereoConfig(...) inside ARCroco3DStereo(...)")
    if inner.args:
        raise ConstructorError("ARCroco3DStereoConfig takes keyword arguments only")
    kwargs = {}
    for kw in inner.keywords:
        if kw.arg is None:
            raise ConstructorError("**kwargs are not accepted in the constructor string")
        kwargs[kw.arg] = _literal(kw.value, kw.arg)
    return kwargs
