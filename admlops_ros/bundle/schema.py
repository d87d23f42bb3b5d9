"""Field kinds of the spec dataclasses: each checks a value, dumps it, states its JSON schema."""
from __future__ import annotations

import dataclasses
import math
import reprlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from admlops_ros.errors import AdmlopsError

_MISSING = dataclasses.MISSING


class _Required:
    """Default of a required spec field (dataclasses in Python 3.8 cannot put a field without
    a default after one with a default, and sections keep the file's natural key order)."""

    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()
_REPR_MAX = 200  # characters of an offending value quoted in an error message


class SpecError(AdmlopsError, ValueError):
    """A spec.yaml or bundle that is invalid; the message names the field, value and fix."""


class _BoundedRepr(reprlib.Repr):
    """reprlib with huge integers described, not printed (repr() of a 5000-digit int fails)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_REPR = _BoundedRepr()  # bounded work: a YAML alias bomb must not be printed whole
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 8, 8, 8
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40
INT64_MAX = (1 << 63) - 1


def short_repr(value: Any) -> str:
    """repr() of a value, bounded in size and in work, for an error message."""
    text = _REPR.repr(value)
    return text if len(text) <= _REPR_MAX else text[:_REPR_MAX - 5] + " ...>"


def invalid(key: str, expected: str, value: Any) -> SpecError:
    """'<key> must be <expected>, got <value>' (the caller's source is prefixed by the parser)."""
    return SpecError(f"{key} must be {expected}, got {short_repr(value)}")


def _is_int(v: Any) -> bool:
    """An int (not a bool) that fits in 64 bits (a 400-digit integer is no spec value)."""
    return isinstance(v, int) and not isinstance(v, bool) and -INT64_MAX <= v <= INT64_MAX


def _is_number(v: Any) -> bool:
    if isinstance(v, int):
        return _is_int(v)
    return isinstance(v, float) and math.isfinite(v)


class Kind:
    """What a field holds: ``parse`` checks and normalises, ``dump`` gives YAML-ready data."""

    expected = "a value"

    def parse(self, value: Any, key: str) -> Any:
        """The normalised value (tuples for sequences, float for numbers).

        Raises:
            SpecError: naming ``key``, what is expected and the value found.
        """
        raise NotImplementedError

    def dump(self, value: Any) -> Any:
        return value

    def json_schema(self) -> Dict[str, Any]:
        raise NotImplementedError


class Number(Kind):
    """A finite float, optionally bounded (``lo_open``: strictly above ``lo``)."""

    def __init__(self, lo: Optional[float] = None, hi: Optional[float] = None,
                 lo_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open = lo, hi, lo_open
        bounds = ""
        if lo is not None:
            bounds += f" {'>' if lo_open else '>='} {lo}"
        if hi is not None:
            bounds += f"{' and' if lo is not None else ''} <= {hi}"
        self.expected = "a number" + bounds

    def parse(self, value: Any, key: str) -> float:
        ok = _is_number(value) and \
            (self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)) and \
            (self.hi is None or value <= self.hi)
        if not ok:
            raise invalid(key, self.expected, value)
        return float(value)

    def json_schema(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"type": "number"}
        if self.lo is not None:
            out["exclusiveMinimum" if self.lo_open else "minimum"] = self.lo
        if self.hi is not None:
            out["maximum"] = self.hi
        return out


class Integer(Kind):
    """An integer >= ``lo`` (and <= ``hi``), or one of ``also`` (e.g. -1 for 'all')."""

    def __init__(self, lo: Optional[int] = None, hi: Optional[int] = None,
                 also: Sequence[int] = (), expected: Optional[str] = None) -> None:
        self.lo, self.hi, self.also = lo, hi, tuple(also)
        default = "an integer" + (f" >= {lo}" if lo is not None else "") + \
            (f" and <= {hi}" if hi is not None else "")
        self.expected = expected or default

    def parse(self, value: Any, key: str) -> int:
        ok = _is_int(value) and (value in self.also or (
            (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)))
        if not ok:
            raise invalid(key, self.expected, value)
        return int(value)

    def json_schema(self) -> Dict[str, Any]:
        ranged: Dict[str, Any] = {"type": "integer"}
        if self.lo is not None:
            ranged["minimum"] = self.lo
        if self.hi is not None:
            ranged["maximum"] = self.hi
        if not self.also:
            return ranged
        return {"oneOf": [ranged, {"enum": list(self.also)}]}


class Boolean(Kind):
    expected = "true or false"

    def parse(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise invalid(key, self.expected, value)
        return value

    def json_schema(self) -> Dict[str, Any]:
        return {"type": "boolean"}


class Text(Kind):
    """A string (non-empty unless ``allow_empty``)."""

    def __init__(self, allow_empty: bool = False) -> None:
        self.allow_empty = allow_empty
        self.expected = "a string" if allow_empty else "a non-empty string"

    def parse(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or (not value and not self.allow_empty):
            raise invalid(key, self.expected, value)
        return value

    def json_schema(self) -> Dict[str, Any]:
        return {"type": "string"} if self.allow_empty else {"type": "string", "minLength": 1}


class Choice(Kind):
    """One of a fixed set of strings; ``none_aliases`` (e.g. 'auto') parse to None."""

    def __init__(self, choices: Sequence[str], none_aliases: Sequence[str] = ()) -> None:
        self.choices, self.none_aliases = tuple(choices), tuple(none_aliases)
        alias = " or ".join(repr(a) for a in self.none_aliases if a)
        self.expected = (f"{alias} or " if alias else "") + f"one of {list(self.choices)}"

    def parse(self, value: Any, key: str) -> Optional[str]:
        if not isinstance(value, str):  # before `in`: an array compares elementwise
            raise invalid(key, self.expected, value)
        if value in self.none_aliases:
            return None
        if value not in self.choices:
            raise invalid(key, self.expected, value)
        return value

    def json_schema(self) -> Dict[str, Any]:
        return {"enum": list(self.choices) + [a for a in self.none_aliases if a]}


class Numbers(Kind):
    """A list of finite numbers -> tuple of floats: exactly ``n`` (or one or more)."""

    def __init__(self, n: Optional[int] = None, positive: bool = False,
                 expected: Optional[str] = None) -> None:
        self.n, self.positive = n, positive
        count = "one or more" if n is None else str(n)
        plural = "" if n == 1 else "s"
        self.expected = expected or f"{count} {'positive ' if positive else ''}number{plural}"

    def parse(self, value: Any, key: str) -> Tuple[float, ...]:
        ok = isinstance(value, (list, tuple)) and len(value) > 0 and \
            all(_is_number(x) for x in value) and (self.n is None or len(value) == self.n) and \
            (not self.positive or all(x > 0 for x in value))
        if not ok:
            raise invalid(key, self.expected, value)
        return tuple(float(x) for x in value)

    def dump(self, value: Any) -> List[float]:
        return list(value)

    def json_schema(self) -> Dict[str, Any]:
        item: Dict[str, Any] = {"type": "number"}
        if self.positive:
            item["exclusiveMinimum"] = 0
        out: Dict[str, Any] = {"type": "array", "items": item, "minItems": self.n or 1}
        if self.n is not None:
            out["maxItems"] = self.n
        return out


class PositiveInts(Kind):
    """Exactly ``n`` positive integers -> tuple of ints (e.g. a feature map's [H, W])."""

    def __init__(self, n: int, expected: str) -> None:
        self.n, self.expected = n, expected

    def parse(self, value: Any, key: str) -> Tuple[int, ...]:
        if not isinstance(value, (list, tuple)) or len(value) != self.n or \
                not all(_is_int(v) and v > 0 for v in value):
            raise invalid(key, self.expected, value)
        return tuple(int(v) for v in value)

    def dump(self, value: Any) -> List[int]:
        return list(value)

    def json_schema(self) -> Dict[str, Any]:
        return {"type": "array", "items": {"type": "integer", "minimum": 1},
                "minItems": self.n, "maxItems": self.n}


class ListOf(Kind):
    """A non-empty list whose items are each of ``item`` kind (messages name ``key[i]``)."""

    def __init__(self, item: Kind, expected: str) -> None:
        self.item, self.expected = item, expected

    def parse(self, value: Any, key: str) -> Tuple[Any, ...]:
        if not isinstance(value, (list, tuple)) or not value:
            raise invalid(key, self.expected, value)
        return tuple(self.item.parse(v, f"{key}[{i}]") for i, v in enumerate(value))

    def dump(self, value: Any) -> List[Any]:
        return [self.item.dump(v) for v in value]

    def json_schema(self) -> Dict[str, Any]:
        return {"type": "array", "items": self.item.json_schema(), "minItems": 1}


class Names(Kind):
    """A non-empty list of distinct non-empty strings; ``check`` adds a rule of the field."""

    def __init__(self, expected: str, check: Optional[Callable[[Sequence[str]], bool]] = None,
                 min_items: int = 1) -> None:
        self.expected, self.check, self.min_items = expected, check, min_items

    def parse(self, value: Any, key: str) -> Tuple[str, ...]:
        ok = isinstance(value, (list, tuple)) and len(value) >= self.min_items and \
            all(isinstance(v, str) and v for v in value) and len(set(value)) == len(value) and \
            (self.check is None or self.check(value))
        if not ok:
            raise invalid(key, self.expected, value)
        return tuple(value)

    def dump(self, value: Any) -> List[str]:
        return list(value)

    def json_schema(self) -> Dict[str, Any]:
        return {"type": "array", "items": {"type": "string", "minLength": 1},
                "minItems": self.min_items, "uniqueItems": True}


class Nullable(Kind):
    """``inner`` or null (absent); None is left out when the spec is dumped."""

    def __init__(self, inner: Kind) -> None:
        self.inner = inner
        self.expected = inner.expected

    def parse(self, value: Any, key: str) -> Any:
        return None if value is None else self.inner.parse(value, key)

    def dump(self, value: Any) -> Any:
        return None if value is None else self.inner.dump(value)

    def json_schema(self) -> Dict[str, Any]:
        return self.inner.json_schema()


class Section(Kind):
    """A nested spec dataclass (a YAML mapping); see :func:`parse_section`."""

    def __init__(self, cls: Type[Any]) -> None:
        self.cls = cls
        self.expected = "a mapping"

    def parse(self, value: Any, key: str) -> Any:
        if isinstance(value, self.cls):
            return value
        return parse_section(self.cls, value, key)

    def dump(self, value: Any) -> Dict[str, Any]:
        return dump_section(value)

    def json_schema(self) -> Dict[str, Any]:
        return section_json_schema(self.cls)


# ----------------------------------------------------------------------------- fields
def spec_field(kind: Kind, doc: str, default: Any = _MISSING,
               factory: Optional[Callable[[], Any]] = None) -> Any:
    """A dataclass field of the spec: its kind (check, dump, JSON schema) and its documentation.

    A field with neither ``default`` nor ``factory`` is required.
    """
    metadata = {"kind": kind, "doc": doc}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=REQUIRED if default is _MISSING else default,
                             metadata=metadata)


def _required(f: dataclasses.Field) -> bool:
    return f.default is REQUIRED


def spec_fields(cls: Type[Any]) -> List[dataclasses.Field]:
    """The dataclass fields of a spec section that appear in spec.yaml."""
    return [f for f in dataclasses.fields(cls) if "kind" in f.metadata]


def check_fields(obj: Any, path: str, names: Optional[Sequence[str]] = None) -> None:
    """Check and normalise the fields of a spec dataclass in place (from ``__post_init__``).

    Args:
        obj: the (frozen) section instance.
        path: its key in spec.yaml ("" for the top level), for messages.
        names: only these fields (default all, in field order); checking is idempotent, so a
            section can check some fields first and all of them after a cross-field rule.

    Raises:
        SpecError: the first field that does not fit its kind.
    """
    for f in spec_fields(type(obj)):
        if names is not None and f.name not in names:
            continue
        key = f"{path}.{f.name}" if path else f.name
        value = getattr(obj, f.name)
        if value is REQUIRED:
            raise SpecError(f"missing {key}")
        object.__setattr__(obj, f.name, f.metadata["kind"].parse(value, key))


def parse_section(cls: Type[Any], data: Any, path: str,
                  missing_hint: str = "") -> Any:
    """Build a spec dataclass from a YAML mapping, with its unknown and missing keys named.

    Raises:
        SpecError: not a mapping, an unknown key (listing the known ones), a missing required
            key, or a bad value (from the dataclass's own checks).
    """
    if not isinstance(data, Mapping):
        raise invalid(path or "spec", "a mapping", data)
    fields = spec_fields(cls)
    known = [f.name for f in fields]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        where = "top-level key(s) " + ", ".join(unknown) if not path else \
            "key(s) " + ", ".join(f"{path}.{k}" for k in unknown)
        raise SpecError(f"unknown {where}; known keys: {', '.join(sorted(known))}")
    values: Dict[str, Any] = {}
    for f in fields:
        if f.name in data and data[f.name] is not None:
            values[f.name] = data[f.name]
        elif _required(f):
            key = f"{path}.{f.name}" if path else f.name
            if isinstance(f.metadata["kind"], Section):
                raise SpecError(f"missing section `{key}`{missing_hint}")
            raise SpecError(f"missing {key}")
    return cls(**values)


def dump_section(obj: Any) -> Dict[str, Any]:
    """A spec dataclass as YAML-ready data, in field order (None-valued optional fields omitted)."""
    out: Dict[str, Any] = {}
    for f in spec_fields(type(obj)):
        value = f.metadata["kind"].dump(getattr(obj, f.name))
        if value is not None:
            out[f.name] = value
    return out


def section_json_schema(cls: Type[Any]) -> Dict[str, Any]:
    """The JSON schema (draft-07) of a spec dataclass: one property per field."""
    props: Dict[str, Any] = {}
    required: List[str] = []
    for f in spec_fields(cls):
        prop = dict(f.metadata["kind"].json_schema())
        doc = f.metadata["doc"]
        if not _required(f) and f.default is not _MISSING and f.default is not None and \
                not dataclasses.is_dataclass(f.default):
            default = f.metadata["kind"].dump(f.default)
            prop["default"] = default
        prop["description"] = doc
        props[f.name] = prop
        if _required(f):
            required.append(f.name)
    out: Dict[str, Any] = {"type": "object", "additionalProperties": False,
                           "properties": props}
    if cls.__doc__:
        out["description"] = " ".join(cls.__doc__.split())
    if required:
        out["required"] = required
    return out
