"""JSON Patch (RFC 6902) and JSON Pointer (RFC 6901) on plain JSON documents, for FHIR PATCH.

Pure and small: the six operations, applied to a copy; any failure (bad pointer, failed `test`,
unknown op) is a PatchError naming the operation's index, answered 422 by the caller.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    pass


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"not a JSON Pointer: {pointer[:60]!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _index(container: list[Any], part: str, *, for_add: bool) -> int:
    if for_add and part == "-":
        return len(container)
    if not part.isdigit() or (part != "0" and part.startswith("0")):
        raise PatchError(f"not an array index: {part[:20]!r}")
    index = int(part)
    if index > len(container) or (index == len(container) and not for_add):
        raise PatchError(f"array index {index} out of range")
    return index


def _parent(doc: Any, pointer: str) -> tuple[Any, str]:
    tokens = _tokens(pointer)
    if not tokens:
        raise PatchError("the whole document cannot be the target")
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token)
    return node, tokens[-1]


def _child(node: Any, token: str) -> Any:
    if isinstance(node, dict):
        if token not in node:
            raise PatchError(f"no member {token[:40]!r}")
        return node[token]
    if isinstance(node, list):
        return node[_index(node, token, for_add=False)]
    raise PatchError(f"cannot descend into a {type(node).__name__}")


def get(doc: Any, pointer: str) -> Any:
    node = doc
    for token in _tokens(pointer):
        node = _child(node, token)
    return node


def _add(doc: Any, pointer: str, value: Any) -> None:
    parent, token = _parent(doc, pointer)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, for_add=True), value)
    else:
        raise PatchError(f"cannot add to a {type(parent).__name__}")


def _remove(doc: Any, pointer: str) -> Any:
    parent, token = _parent(doc, pointer)
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"no member {token[:40]!r} to remove")
        return parent.pop(token)
    if isinstance(parent, list):
        return parent.pop(_index(parent, token, for_add=False))
    raise PatchError(f"cannot remove from a {type(parent).__name__}")


def apply_patch(document: dict[str, Any], operations: Any) -> dict[str, Any]:
    if not isinstance(operations, list):
        raise PatchError("a JSON Patch document is an array of operations")
    doc = copy.deepcopy(document)
    for number, op in enumerate(operations):
        try:
            if not isinstance(op, dict) or not isinstance(op.get("path"), str):
                raise PatchError("each operation needs an `op` and a string `path`")
            name, path = op.get("op"), op["path"]
            if name in ("add", "replace", "test") and "value" not in op:
                raise PatchError(f"`{name}` needs a `value`")
            if name == "add":
                _add(doc, path, copy.deepcopy(op["value"]))
            elif name == "remove":
                _remove(doc, path)
            elif name == "replace":
                _remove(doc, path)
                _add(doc, path, copy.deepcopy(op["value"]))
            elif name in ("move", "copy"):
                source = op.get("from")
                if not isinstance(source, str):
                    raise PatchError(f"`{name}` needs a string `from`")
                value = _remove(doc, source) if name == "move" else copy.deepcopy(get(doc, source))
                _add(doc, path, value)
            elif name == "test":
                if get(doc, path) != op["value"]:
                    raise PatchError(f"test failed at {path[:60]}")
            else:
                raise PatchError(f"unknown op {str(name)[:20]!r}")
        except PatchError as exc:
            raise PatchError(f"operation {number}: {exc}") from None
    return doc
