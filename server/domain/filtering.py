"""List filters in the AIP-160 syntax, compiled to SQL conditions.

Supported subset: restrictions ``field = value``, ``field != value`` and
``field : value`` (has / contains), combined with ``AND``, ``OR`` (which binds
tighter than AND, as AIP-160 says), ``NOT`` or ``-``, and parentheses. Values
are double-quoted strings or bare words; a trailing ``*`` in an ``=`` value is
a prefix match. Which fields exist, and what each operator means for them, is
the caller's ``FieldMap``.

The grammar is parsed with lark rather than by hand: the AIP grammar has
precedence and quoting rules that a hand-rolled splitter gets wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import LarkError, VisitError
from sqlalchemy import ColumnElement, and_, not_, or_

from server.domain import limits
from server.domain.errors import FieldViolation, invalid_argument

# (operator, value) -> SQL condition; raise ValueError for an unsupported operator.
FieldCompiler = Callable[[str, str], ColumnElement[bool]]
FieldMap = Mapping[str, FieldCompiler]

_GRAMMAR = r"""
?start: expression
?expression: sequence (_AND sequence)*       -> all_of
?sequence: factor (_OR factor)*              -> any_of
?factor: _NOT factor                         -> negate
       | "-" factor                          -> negate
       | "(" expression ")"
       | restriction
restriction: NAME COMPARATOR value
?value: ESCAPED_STRING -> quoted
      | WORD           -> bare
COMPARATOR: "!=" | "=" | ":"
_AND.2: "AND"
_OR.2: "OR"
_NOT.2: "NOT"
NAME.1: /[a-z_][a-z0-9_]*/
WORD: /[^\s()"=!:]+/
%import common.ESCAPED_STRING
%import common.WS
%ignore WS
"""

_PARSER = Lark(_GRAMMAR, parser="lalr")


class _Compiler(Transformer[Token, ColumnElement[bool]]):
    def __init__(self, fields: FieldMap) -> None:
        super().__init__()
        self.fields = fields

    def all_of(self, items: list[ColumnElement[bool]]) -> ColumnElement[bool]:
        return and_(*items)

    def any_of(self, items: list[ColumnElement[bool]]) -> ColumnElement[bool]:
        return or_(*items)

    def negate(self, items: list[ColumnElement[bool]]) -> ColumnElement[bool]:
        return not_(items[0])

    @v_args(inline=True)
    def quoted(self, token: Token) -> str:
        return str(json.loads(token))

    @v_args(inline=True)
    def bare(self, token: Token) -> str:
        return str(token)

    @v_args(inline=True)
    def restriction(self, name: Token, comparator: Token, value: str) -> ColumnElement[bool]:
        compile_field = self.fields.get(str(name))
        if compile_field is None:
            raise ValueError(f"unknown field {str(name)!r}; filterable fields: {', '.join(sorted(self.fields))}")
        return compile_field(str(comparator), value)


def compile_filter(text: str, fields: FieldMap) -> ColumnElement[bool] | None:
    """The SQL condition for ``text``; None for an empty filter.

    Raises INVALID_ARGUMENT (INVALID_FILTER, field ``filter``) for a syntax
    error, an unknown field, an operator the field does not support, a filter
    over ``AGENTAPI_MAX_FILTER_CHARS`` characters (default 1000) or nested
    deeper than ``AGENTAPI_MAX_FILTER_DEPTH`` (default 32) parentheses and
    negations.
    """
    if not text.strip():
        return None
    bounds = limits.active()
    if len(text) > bounds.filter_chars:
        raise _bad(f"must be at most {bounds.filter_chars} characters (AGENTAPI_MAX_FILTER_CHARS); got {len(text)}")
    try:
        tree = _PARSER.parse(text)
        # The LALR parse is iterative, but compiling the tree (the transformer,
        # then SQLAlchemy) recurses once or more per level: a filter of
        # hundreds of nested parentheses or NOTs would end in RecursionError.
        depth = nesting(tree)
        if depth > bounds.filter_depth:
            raise _bad(
                f"must nest at most {bounds.filter_depth} levels of parentheses and NOT"
                f" (AGENTAPI_MAX_FILTER_DEPTH); got {depth}"
            )
        return _Compiler(fields).transform(tree)
    except VisitError as exc:
        raise _bad(str(exc.orig_exc)) from exc
    except LarkError as exc:
        raise _bad(f"syntax error: {str(exc).splitlines()[0]}") from exc


def nesting(tree: Tree[Token]) -> int:
    """Levels of nesting in a parsed filter: parentheses (each opens a nested
    ``all_of`` below the root) plus negations, on the deepest path. Walked
    with an explicit stack, so any depth is measured without recursing."""
    deepest = 0
    stack: list[tuple[Tree[Token], int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node is not tree and node.data in ("all_of", "negate"):
            depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in node.children if isinstance(child, Tree))
    return deepest


def _bad(description: str) -> Exception:
    return invalid_argument(
        f"filter is invalid: {description}", [FieldViolation("filter", description)], reason="INVALID_FILTER"
    )


def like_escape(value: str) -> str:
    """``value`` with LIKE's wildcards escaped (use with ``escape="\\\\"``)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def text_field(column: Any) -> FieldCompiler:
    """A string column: ``=`` exact (``abc*`` is a prefix), ``!=``, ``:`` contains."""

    def compile_text(op: str, value: str) -> ColumnElement[bool]:
        if op == ":":
            return column.like(f"%{like_escape(value)}%", escape="\\")
        if value.endswith("*"):
            condition = column.like(f"{like_escape(value[:-1])}%", escape="\\")
        else:
            condition = column == value
        return not_(condition) if op == "!=" else condition

    return compile_text
