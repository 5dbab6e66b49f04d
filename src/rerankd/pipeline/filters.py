"""Metadata filters: one small JSON language, applied by every retriever.

``{"lang": "en"}`` (equals), ``{"tags": ["a", "b"]}`` (any of), ``{"year": {"gte": 2000, "lt": 2010}}`` (a numeric
range; ``gt``/``gte``/``lt``/``lte``), ``{"lang": {"in": ["en", "fr"]}}``, ``{"lang": {"eq": "en"}}``. Several fields
must all match. A list-valued metadata field matches when any of its values does. Values are matched exactly
(case-sensitive), strings against strings and numbers against numbers.

The embedded index runs filters as tantivy queries on its JSON ``metadata`` field; Elasticsearch and OpenSearch
get the equivalent ``bool.filter`` clauses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rerankd.errors import InvalidInput

Scalar = str | int | float | bool
FIELD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_][A-Za-z0-9_\-]*)*$")
RANGE_KEYS = ("gt", "gte", "lt", "lte")
OPERATORS = (*RANGE_KEYS, "eq", "in")


@dataclass(frozen=True)
class Condition:
    """One field's test: equal to one of ``values``, or inside the numeric range."""

    field: str
    values: tuple[Scalar, ...] = ()
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @property
    def is_range(self) -> bool:
        return any(getattr(self, key) is not None for key in RANGE_KEYS)


Filters = tuple[Condition, ...]


def _scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise InvalidInput(f"filter {where}: {value!r} is not a string, number or boolean", param="filters")


def _bound(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"filter {where}: range bounds must be numbers, got {value!r}", param="filters")
    return value


def _condition(name: str, spec: Any) -> Condition:
    if not FIELD_NAME.match(name):
        raise InvalidInput(f"filter field {name!r}: use letters, digits, _ - and dots", param="filters")
    if isinstance(spec, list):
        if not spec:
            raise InvalidInput(f"filter {name}: an empty list matches nothing", param="filters")
        return Condition(name, tuple(_scalar(v, name) for v in spec))
    if not isinstance(spec, Mapping):
        return Condition(name, (_scalar(spec, name),))
    unknown = sorted(set(spec) - set(OPERATORS))
    if unknown or not spec:
        raise InvalidInput(f"filter {name}: unknown operator {unknown[:1] or '{}'}; use {OPERATORS}", param="filters")
    if "eq" in spec or "in" in spec:
        if set(spec) - {"eq", "in"}:
            raise InvalidInput(f"filter {name}: eq/in cannot be combined with a range", param="filters")
        values = [spec["eq"]] if "eq" in spec else []
        listed = spec.get("in", [])
        values += listed if isinstance(listed, list) else [listed]
        return _condition(name, values)
    bounds = {key: _bound(spec[key], name) for key in RANGE_KEYS if key in spec}
    return Condition(name, (), bounds.get("gt"), bounds.get("gte"), bounds.get("lt"), bounds.get("lte"))


def parse_filters(spec: Mapping[str, Any] | None) -> Filters:
    """Validated conditions of a filter object (``None`` or ``{}``: no filter)."""
    if not spec:
        return ()
    if not isinstance(spec, Mapping):
        raise InvalidInput("filters must be a JSON object of field -> condition", param="filters")
    return tuple(_condition(str(name), value) for name, value in spec.items())


# ---------------------------------------------------------------------------------------------- tantivy
def _number(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def _range_text(field: str, condition: Condition) -> str:
    low = condition.gte if condition.gte is not None else condition.gt
    high = condition.lte if condition.lte is not None else condition.lt
    opening = "{" if condition.gt is not None and condition.gte is None else "["
    closing = "}" if condition.lt is not None and condition.lte is None else "]"
    low_text = _number(low) if low is not None else "*"
    high_text = _number(high) if high is not None else "*"
    return f"{field}:{opening}{low_text} TO {high_text}{closing}"


def tantivy_filter(index: Any, schema: Any, filters: Filters, field: str = "metadata") -> Any:
    """A tantivy query matching the documents that pass ``filters`` (all scored 0)."""
    import tantivy

    clauses = []
    for condition in filters:
        path = f"{field}.{condition.field}"
        if condition.is_range:
            query = index.parse_query(_range_text(path, condition), [])
        else:
            terms = [tantivy.Query.term_query(schema, path, value) for value in condition.values]
            query = terms[0] if len(terms) == 1 else tantivy.Query.boolean_query(
                [(tantivy.Occur.Should, term) for term in terms]
            )  # fmt: skip
        clauses.append((tantivy.Occur.Must, tantivy.Query.const_score_query(query, 0.0)))
    return tantivy.Query.boolean_query(clauses)


# ---------------------------------------------------------------------------------------------- ES / OpenSearch
def search_engine_filter(filters: Filters, prefix: str = "") -> list[dict[str, Any]]:
    """``bool.filter`` clauses for Elasticsearch/OpenSearch; ``prefix`` is where metadata lives (e.g. ``meta.``)."""
    clauses: list[dict[str, Any]] = []
    for condition in filters:
        name = f"{prefix}{condition.field}"
        if condition.is_range:
            bounds = {key: getattr(condition, key) for key in RANGE_KEYS if getattr(condition, key) is not None}
            clauses.append({"range": {name: bounds}})
        elif len(condition.values) == 1:
            clauses.append({"term": {name: condition.values[0]}})
        else:
            clauses.append({"terms": {name: list(condition.values)}})
    return clauses
