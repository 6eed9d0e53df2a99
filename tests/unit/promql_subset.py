"""A small PromQL parser for checking dashboard queries offline: the subset Grafana panels use (selectors, range
selectors, functions, aggregations with by/without, binary operators with on/ignoring/group_*, offset, numbers,
strings, Grafana's $variables). It either returns what the expression references (metric names, label names,
functions) or raises PromQLError saying where the syntax breaks. Not Prometheus' parser: a dashboard that passes
here can still be wrong about semantics, but a renamed metric, an unknown function, a rate() of an instant vector
or an unbalanced bracket fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Prometheus 2.x/3.x functions (promql/parser/functions.go) a dashboard may call; name -> (min args, max args).
FUNCTIONS = {
    "abs": (1, 1), "absent": (1, 1), "absent_over_time": (1, 1), "avg_over_time": (1, 1), "ceil": (1, 1),
    "changes": (1, 1), "clamp": (3, 3), "clamp_max": (2, 2), "clamp_min": (2, 2), "count_over_time": (1, 1),
    "day_of_month": (0, 1), "day_of_week": (0, 1), "days_in_month": (0, 1), "delta": (1, 1), "deriv": (1, 1),
    "exp": (1, 1), "floor": (1, 1), "histogram_avg": (1, 1), "histogram_count": (1, 1),
    "histogram_fraction": (3, 3), "histogram_quantile": (2, 2), "histogram_sum": (1, 1), "hour": (0, 1),
    "idelta": (1, 1), "increase": (1, 1), "irate": (1, 1), "label_join": (3, 99), "label_replace": (5, 5),
    "last_over_time": (1, 1), "ln": (1, 1), "log10": (1, 1), "log2": (1, 1), "max_over_time": (1, 1),
    "min_over_time": (1, 1), "minute": (0, 1), "month": (0, 1), "predict_linear": (2, 2),
    "quantile_over_time": (2, 2), "rate": (1, 1), "resets": (1, 1), "round": (1, 2), "scalar": (1, 1),
    "sgn": (1, 1), "sort": (1, 1), "sort_desc": (1, 1), "sqrt": (1, 1), "stddev_over_time": (1, 1),
    "sum_over_time": (1, 1), "time": (0, 0), "timestamp": (1, 1), "vector": (1, 1), "year": (0, 1),
}
# Functions whose (first, or only) argument must be a range vector: `rate(x[5m])`, never `rate(x)`.
RANGE_FUNCTIONS = {name for name in FUNCTIONS if name.endswith("_over_time")} | {
    "changes", "delta", "deriv", "idelta", "increase", "irate", "predict_linear", "rate", "resets"}
RANGE_ARGUMENT = {"quantile_over_time": 1}  # index of the range argument where it is not the first
AGGREGATIONS = {"sum", "avg", "min", "max", "count", "stddev", "stdvar", "group", "topk", "bottomk", "quantile",
                "count_values", "limitk", "limit_ratio"}
PARAMETERISED = {"topk", "bottomk", "quantile", "count_values", "limitk", "limit_ratio"}  # take a first parameter
BINARY = ("==", "!=", ">=", "<=", ">", "<", "+", "-", "*", "/", "%", "^", "and", "or", "unless", "atan2")
GRAFANA_DURATIONS = {"$__rate_interval", "$__interval", "$__range"}

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+(?!\w))
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?!\w))
  | (?P<variable>\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|==|!=|>=|<=|[-+*/%^<>=(){}\[\],:])
""", re.VERBOSE)


class PromQLError(ValueError):
    pass


@dataclass
class References:
    """What one expression uses."""

    metrics: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)  # in matchers and in by/without/on/ignoring/group_* lists
    functions: set[str] = field(default_factory=set)
    variables: set[str] = field(default_factory=set)  # Grafana template variables, without the "$"


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match:
            raise PromQLError(f"unexpected character {expr[pos]!r} at {pos}: {expr}")
        kind = match.lastgroup
        if kind != "ws":
            tokens.append((kind, match.group()))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, expr: str):
        self.expr = expr
        self.tokens = tokenize(expr)
        self.pos = 0
        self.refs = References()

    # --- token helpers ---------------------------------------------------------------------------------------
    def peek(self, offset: int = 0) -> tuple[str, str]:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else ("end", "")

    def take(self, value: str | None = None, kind: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if (value is not None and token[1] != value) or (kind is not None and token[0] != kind):
            wanted = value or kind
            raise PromQLError(f"expected {wanted!r}, found {token[1] or 'the end'!r} (token {self.pos}): {self.expr}")
        self.pos += 1
        return token

    def at(self, *values: str) -> bool:
        return self.peek()[1] in values and self.peek()[0] in ("op", "ident")

    # --- grammar ---------------------------------------------------------------------------------------------
    def parse(self) -> References:
        self.expression()
        if self.peek()[0] != "end":
            raise PromQLError(f"unexpected {self.peek()[1]!r} after a complete expression: {self.expr}")
        return self.refs

    def expression(self) -> str:
        """Returns the kind of the result: 'range' (a range vector), 'vector', 'scalar' or 'string'."""
        kind = self.unary()
        while self.at(*BINARY):
            self.take()
            if self.at("bool"):
                self.take()
            if self.at("on", "ignoring"):
                self.take()
                self.label_list()
            if self.at("group_left", "group_right"):
                self.take()
                if self.peek()[1] == "(":
                    self.label_list()
            right = self.unary()
            if "range" in (kind, right):
                raise PromQLError(f"binary operator on a range vector: {self.expr}")
            kind = "vector" if "vector" in (kind, right) else "scalar"
        return kind

    def unary(self) -> str:
        if self.peek()[1] in ("-", "+"):
            self.take()
        kind, selector = self.primary()
        if self.peek()[1] == "[":
            self.take("[")
            self.duration()
            subquery = self.peek()[1] == ":"
            if subquery:
                self.take(":")
                if self.peek()[1] != "]":
                    self.duration()
            self.take("]")
            # x[5m] needs a plain selector; any other vector expression needs the subquery form (expr)[5m:1m].
            if kind != "vector" or not (selector or subquery):
                raise PromQLError(f"a range [..] needs a selector, or a subquery [range:step]: {self.expr}")
            kind = "range"
        if self.at("offset"):
            self.take()
            if self.peek()[1] == "-":
                self.take()
            self.duration()
        return kind

    def duration(self) -> None:
        kind, value = self.peek()
        if kind == "duration" or (kind == "variable" and value in GRAFANA_DURATIONS):
            self.pos += 1
            if kind == "variable":
                self.refs.variables.add(value.strip("${}"))
            return
        raise PromQLError(f"expected a duration, found {value or 'the end'!r}: {self.expr}")

    def primary(self) -> tuple[str, bool]:
        """The operand's kind, and whether it is a plain selector (the only thing a bare [range] may follow)."""
        kind, value = self.peek()
        if kind == "number":
            self.take()
            return "scalar", False
        if kind == "string":
            self.take()
            return "string", False
        if value == "(":
            self.take("(")
            inner = self.expression()
            self.take(")")
            return inner, False
        if value == "{":
            self.matchers()
            return "vector", True
        if kind == "ident":
            if value in AGGREGATIONS:
                return self.aggregation(), False
            if self.peek(1)[1] == "(":
                return self.function(), False
            self.take()
            self.refs.metrics.add(value)
            if self.peek()[1] == "{":
                self.matchers()
            return "vector", True
        raise PromQLError(f"unexpected {value or 'end of expression'!r}: {self.expr}")

    def function(self) -> str:
        name = self.take(kind="ident")[1]
        if name not in FUNCTIONS:
            raise PromQLError(f"unknown function {name}(): {self.expr}")
        self.refs.functions.add(name)
        self.take("(")
        kinds = []
        if self.peek()[1] != ")":
            kinds.append(self.expression())
            while self.peek()[1] == ",":
                self.take(",")
                kinds.append(self.expression())
        self.take(")")
        low, high = FUNCTIONS[name]
        if not low <= len(kinds) <= high:
            raise PromQLError(f"{name}() takes {low}..{high} arguments, got {len(kinds)}: {self.expr}")
        if name in RANGE_FUNCTIONS and kinds[RANGE_ARGUMENT.get(name, 0)] != "range":
            raise PromQLError(f"{name}() needs a range vector such as x[5m]: {self.expr}")
        if name not in RANGE_FUNCTIONS and "range" in kinds:
            raise PromQLError(f"{name}() takes no range vector: {self.expr}")
        return "scalar" if name in ("scalar", "time") else "vector"

    def aggregation(self) -> str:
        name = self.take(kind="ident")[1]
        self.refs.functions.add(name)
        if self.at("by", "without"):
            self.take()
            self.label_list()
        self.take("(")
        if name in PARAMETERISED:
            self.expression()
            self.take(",")
        if self.expression() != "vector":
            raise PromQLError(f"{name}() aggregates an instant vector: {self.expr}")
        self.take(")")
        if self.at("by", "without"):
            self.take()
            self.label_list()
        return "vector"

    def label_list(self) -> None:
        self.take("(")
        while self.peek()[1] != ")":
            self.refs.labels.add(self.take(kind="ident")[1])
            if self.peek()[1] == ",":
                self.take(",")
            elif self.peek()[1] != ")":
                raise PromQLError(f"expected ',' or ')' in a label list: {self.expr}")
        self.take(")")

    def matchers(self) -> None:
        self.take("{")
        while self.peek()[1] != "}":
            label = self.take(kind="ident")[1]
            if self.peek()[1] not in ("=", "!=", "=~", "!~"):
                raise PromQLError(f"expected a matcher operator after {label}: {self.expr}")
            self.take()
            value = self.take(kind="string")[1]
            self.refs.variables |= {v.strip("${}") for v in re.findall(r"\$\{?\w+\}?", value)}
            if label == "__name__":
                self.refs.metrics.add(value.strip("\"'`"))
            else:
                self.refs.labels.add(label)
            if self.peek()[1] == ",":
                self.take(",")
            elif self.peek()[1] != "}":
                raise PromQLError(f"expected ',' or '}}' between matchers: {self.expr}")
        self.take("}")


def parse(expr: str) -> References:
    """The metrics, labels, functions and Grafana variables ``expr`` uses; PromQLError if it does not parse."""
    if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}") or expr.count("[") != expr.count("]"):
        raise PromQLError(f"unbalanced brackets: {expr}")
    return _Parser(expr).parse()
