"""Render the Go templates Helios puts in jobs, the way a Nomad client would, for the tests.

A small interpreter of Go's text/template (https://pkg.go.dev/text/template): text, actions
with ``{{-``/``-}}`` trimming, ``with``/``range``/``if``/``end``, variables (``$k := ...``),
pipelines with ``|``, parenthesised calls, string literals, field chains (``.K``), and the
functions Helios's secrets template uses: consul-template's ``nomadVar`` (whose ``.Tuples``
are the items sorted by key, and whose ``.name`` is one item's value), ``split`` and
``toJSON``, and Go's ``len``, ``index`` and ``eq``. Anything else is an error, so a template
using more fails the test that renders it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TemplateError", "render_template"]

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(\$\w*)|(\.\w+(?:\.\w+)*|\.)|(\w+)|(:=)|([|()]))')


class TemplateError(ValueError):
    """The template uses something this interpreter (and the test) does not expect."""


@dataclass
class Tuple:
    """One item of a Nomad Variable as ``.Tuples`` yields it."""

    K: str
    V: str


class VarItems:
    """What consul-template's ``nomadVar`` returns: the variable's items."""

    def __init__(self, items: Mapping[str, str]) -> None:
        self.items = dict(items)

    @property
    def Tuples(self) -> list[Tuple]:
        """Items sorted by key (NomadVarItems.Tuples)."""
        return [Tuple(key, self.items[key]) for key in sorted(self.items)]

    def __getattr__(self, name: str) -> str:
        """One item's value, as ``.name`` reads it (Go indexes a map by field name)."""
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in self.__dict__.get("items", {}):
            raise TemplateError(
                f"the variable has no item {name!r} (Nomad would write '<no value>')"
            )
        return self.items[name]


def _parse_actions(text: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", s)] with Go's trim markers applied."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for match in _ACTION.finditer(text):
        chunk = text[pos : match.start()]
        if match.group(1):
            chunk = chunk.rstrip()
        parts.append(("text", chunk))
        parts.append(("action", match.group(2).strip()))
        pos = match.end()
        if match.group(3):
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip())
    parts.append(("text", text[pos:]))
    return [part for part in parts if part != ("text", "")]


def _tokens(source: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(source.rstrip()):
        match = _TOKEN.match(source, pos)
        if not match:
            raise TemplateError(f"cannot read {source[pos:]!r}")
        tokens.append(next(group for group in match.groups() if group is not None))
        pos = match.end()
    return tokens


def _block(parts: list[tuple[str, str]], start: int) -> tuple[list[Any], int]:
    """Nodes up to the matching {{ end }} (or the end); the position after it."""
    nodes: list[Any] = []
    pos = start
    while pos < len(parts):
        kind, value = parts[pos]
        if kind == "text":
            nodes.append(("text", value))
            pos += 1
            continue
        keyword = value.split(None, 1)[0] if value else ""
        if keyword == "end":
            return nodes, pos + 1
        if keyword in {"with", "range", "if"}:
            body, pos = _block(parts, pos + 1)
            nodes.append((keyword, _tokens(value[len(keyword) :]), body))
            continue
        if keyword in {"else", "define", "template", "block"}:
            raise TemplateError(f"{keyword!r} is not expected in Helios's templates")
        nodes.append(("output", _tokens(value)))
        pos += 1
    return nodes, pos


class _Scope:
    def __init__(self, dot: Any, variables: dict[str, Any]) -> None:
        self.dot = dot
        self.variables = variables


def _evaluate(tokens: list[str], scope: _Scope, functions: Mapping[str, Callable]) -> Any:
    """Evaluate a pipeline: commands separated by '|', each piping into the next's last arg."""
    commands, depth, current = [], 0, []
    for token in tokens:
        if token == "|" and depth == 0:
            commands.append(current)
            current = []
            continue
        depth += token == "("
        depth -= token == ")"
        current.append(token)
    commands.append(current)
    result, piped = None, False
    for command in commands:
        result = _command(command, scope, functions, [result] if piped else [])
        piped = True
    return result


def _operands(tokens: list[str], scope: _Scope, functions: Mapping[str, Callable]) -> list[Any]:
    values, pos = [], 0
    while pos < len(tokens):
        token = tokens[pos]
        if token == "(":
            depth, end = 1, pos + 1
            while depth:
                depth += tokens[end] == "("
                depth -= tokens[end] == ")"
                end += 1
            values.append(_evaluate(tokens[pos + 1 : end - 1], scope, functions))
            pos = end
            continue
        values.append(_value(token, scope))
        pos += 1
    return values


def _value(token: str, scope: _Scope) -> Any:
    if token.startswith('"'):
        return json.loads(token)
    if token.isdigit():
        return int(token)
    if token.startswith("$"):
        return scope.variables[token]
    if token == ".":
        return scope.dot
    if token.startswith("."):
        value = scope.dot
        for name in token[1:].split("."):
            value = getattr(value, name)
        return value
    raise TemplateError(f"unexpected {token!r}")


def _command(
    tokens: list[str], scope: _Scope, functions: Mapping[str, Callable], piped: list[Any]
) -> Any:
    head = tokens[0]
    if head.startswith(("$", ".", '"', "(")):
        if len(tokens) > 1 or piped:
            raise TemplateError(f"cannot call {head!r}")
        return _operands(tokens, scope, functions)[0]
    if head not in functions:
        raise TemplateError(f"function {head!r} is not one Helios's templates may use")
    return functions[head](*_operands(tokens[1:], scope, functions), *piped)


def _run(nodes: list[Any], scope: _Scope, functions: Mapping[str, Callable], out: list[str]):
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "output":
            tokens = node[1]
            if len(tokens) > 2 and tokens[0].startswith("$") and tokens[1] == ":=":
                scope.variables[tokens[0]] = _evaluate(tokens[2:], scope, functions)
            else:
                out.append(_show(_evaluate(tokens, scope, functions)))
        else:
            value = _evaluate(node[1], scope, functions)
            if kind == "if" and value:
                _run(node[2], _Scope(scope.dot, dict(scope.variables)), functions, out)
            elif kind == "with" and value:
                _run(node[2], _Scope(value, dict(scope.variables)), functions, out)
            elif kind == "range":
                for element in value or ():
                    _run(node[2], _Scope(element, dict(scope.variables)), functions, out)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_template(text: str, variables: Mapping[str, Mapping[str, str]]) -> str:
    """Render ``text`` as a Nomad client would, with these Nomad Variables (path → items).

    ``nomadVar`` of a path that has no variable raises: consul-template would block there.
    """

    def nomad_var(path: str) -> VarItems:
        if path not in variables:
            raise TemplateError(f"nomadVar {path!r}: no such variable (the task would wait)")
        return VarItems(variables[path])

    def index(collection: Any, position: int) -> Any:
        if not 0 <= position < len(collection):
            raise TemplateError(f"index out of range: {position}")  # Go errors the same way
        return collection[position]

    functions = {
        "nomadVar": nomad_var,
        "split": lambda separator, value: value.split(separator),
        "toJSON": lambda value: json.dumps(value, ensure_ascii=False),
        "len": len,
        "index": index,
        "eq": lambda a, b: a == b,
    }
    nodes, _ = _block(_parse_actions(text), 0)
    out: list[str] = []
    _run(nodes, _Scope(None, {}), functions, out)
    return "".join(out)
