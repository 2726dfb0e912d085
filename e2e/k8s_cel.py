"""CEL as the Kubernetes API server evaluates `x-kubernetes-validations` rules, on top of
cel-python (`celpy`).

celpy implements the CEL language and its standard functions. Kubernetes differs from it, or adds
to it, in the places below, which this module supplies:

- `duration(string)` follows Go's `time.ParseDuration` exactly, to the nanosecond (celpy rounds
  to microseconds and accepts a `d` unit that Go refuses);
- the Kubernetes URL library (`isURL`, `url`, `getScheme`, `getHost`, `getHostname`, `getPort`,
  `getEscapedPath`, `getQuery`) follows Go's `net/url.ParseRequestURI`;
- `substring` from the cel-go strings extension that Kubernetes enables;
- `size` and `matches` report errors instead of answering for values they do not apply to;
- values are typed from the schema (`number` is a double even when written `1`, `format: byte`
  is bytes, ...), as the API server types them.

`Rule(text)` compiles a rule once; `rule.evaluate(schema, value)` runs it against a value.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import dataclasses
import datetime
import logging
import re

import celpy
import celpy.celtypes as ct
import re2
from celpy.evaluation import CELEvalError

# celpy logs every failed overload lookup at debug level; rules that fail are reported by the
# caller, so the log would only repeat them.
logging.getLogger("celpy").setLevel(logging.WARNING)

# ---------------------------------------------------------------------------------------------
# Durations


class DurationError(ValueError):
    pass


_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek small letter mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX_DURATION_MAGNITUDE = 1 << 63


def parse_go_duration(text: str) -> int:
    """Nanoseconds of a Go duration string ("300ms", "-1.5h", "2h45m"), with Go's error text."""
    s = text
    neg = False
    invalid = DurationError(f"time: invalid duration {_go_quote(text)}")
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or s[0].isascii() and s[0].isdigit()):
            raise invalid
        i = 0
        whole = 0
        while i < len(s) and s[i].isascii() and s[i].isdigit():
            whole = whole * 10 + int(s[i])
            if whole > _MAX_DURATION_MAGNITUDE:
                raise invalid
            i += 1
        pre = i > 0
        s = s[i:]
        frac, scale, post = 0, 1, False
        if s.startswith("."):
            s = s[1:]
            i = 0
            overflow = False
            while i < len(s) and s[i].isascii() and s[i].isdigit():
                # Go stops taking digits once the fraction would overflow, and ignores the rest.
                if not overflow:
                    nxt = frac * 10 + int(s[i])
                    if frac > (_MAX_DURATION_MAGNITUDE - 1) // 10 or nxt > _MAX_DURATION_MAGNITUDE:
                        overflow = True
                    else:
                        frac, scale = nxt, scale * 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise invalid
        i = 0
        while i < len(s) and not (s[i] == "." or s[i].isascii() and s[i].isdigit()):
            i += 1
        if i == 0:
            raise DurationError(f"time: missing unit in duration {_go_quote(text)}")
        unit_name, s = s[:i], s[i:]
        unit = _UNITS_NS.get(unit_name)
        if unit is None:
            raise DurationError(f"time: unknown unit {_go_quote(unit_name)} in duration {_go_quote(text)}")
        if whole > _MAX_DURATION_MAGNITUDE // unit:
            raise invalid
        value = whole * unit
        if frac:
            # Go computes the fraction in float64; so do we, to round the same way.
            value += int(float(frac) * (float(unit) / scale))
            if value > _MAX_DURATION_MAGNITUDE:
                raise invalid
        total += value
        if total > _MAX_DURATION_MAGNITUDE:
            raise invalid
    if neg:
        return -total
    if total > _MAX_DURATION_MAGNITUDE - 1:
        raise invalid
    return total


def _go_quote(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return '"' + "".join(out) + '"'


@dataclasses.dataclass(frozen=True)
class Duration:
    """A CEL duration with Go's nanosecond resolution. Compares and adds only with durations, so
    that mixing it with numbers is a CEL "no such overload" error, as in cel-go."""

    ns: int

    def _check(self, other: object) -> "Duration":
        if not isinstance(other, Duration):
            raise TypeError(f"no such overload: duration and {_cel_type_name(other)}")
        return other

    def __lt__(self, other):
        return self.ns < self._check(other).ns

    def __le__(self, other):
        return self.ns <= self._check(other).ns

    def __gt__(self, other):
        return self.ns > self._check(other).ns

    def __ge__(self, other):
        return self.ns >= self._check(other).ns

    def __add__(self, other):
        return Duration(self.ns + self._check(other).ns)

    def __sub__(self, other):
        return Duration(self.ns - self._check(other).ns)

    def __neg__(self):
        return Duration(-self.ns)


def _duration(value) -> Duration | CELEvalError:
    if isinstance(value, Duration):
        return value
    if not isinstance(value, str):
        return _error(f"no such overload: duration({_cel_type_name(value)})")
    try:
        return Duration(parse_go_duration(value))
    except DurationError as e:
        return _error(str(e))


# ---------------------------------------------------------------------------------------------
# URLs, as Go's net/url parses them for url.ParseRequestURI


class URLError(ValueError):
    pass


@dataclasses.dataclass
class URL:
    scheme: str = ""
    opaque: str = ""
    host: str = ""
    path: str = ""
    raw_path: str = ""
    raw_query: str = ""

    def hostname(self) -> str:
        return _split_host_port(self.host)[0]

    def port(self) -> str:
        return _split_host_port(self.host)[1]

    def escaped_path(self) -> str:
        if self.raw_path and _valid_encoded(self.raw_path):
            try:
                if _unescape(self.raw_path, _PATH) == self.path:
                    return self.raw_path
            except URLError:
                pass
        if self.path == "*":
            return "*"
        return _escape(self.path, _PATH)

    def query(self) -> dict[str, list[str]]:
        values: dict[str, list[str]] = {}
        for pair in self.raw_query.split("&") if self.raw_query else []:
            if ";" in pair or not pair:
                continue
            key, _, value = pair.partition("=")
            try:
                key, value = _unescape(key, _QUERY), _unescape(value, _QUERY)
            except URLError:
                continue
            values.setdefault(key, []).append(value)
        return values


_PATH, _HOST, _ZONE, _USERINFO, _QUERY = "path", "host", "zone", "userinfo", "query"
_HEX = "0123456789abcdefABCDEF"


def parse_request_uri(raw: str) -> URL:
    """Go's `url.ParseRequestURI`: an absolute URI or an absolute path, no fragment."""
    try:
        return _parse_request_uri(raw)
    except URLError as e:
        raise URLError(f"parse {_go_quote(raw)}: {e}") from None


def _parse_request_uri(raw: str) -> URL:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise URLError("net/url: invalid control character in URL")
    if raw == "":
        raise URLError("empty url")
    u = URL()
    if raw == "*":
        u.path = "*"
        return u
    scheme, rest = _get_scheme(raw)
    u.scheme = scheme.lower()
    if rest.endswith("?") and rest.count("?") == 1:
        rest = rest[:-1]
    else:
        rest, _, u.raw_query = rest.partition("?")
    if not rest.startswith("/"):
        if u.scheme:
            u.opaque = rest
            return u
        raise URLError("invalid URI for request")
    if u.scheme and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        rest = slash + path
        u.host = _parse_authority(authority)
    path = _unescape(rest, _PATH)
    u.path = path
    u.raw_path = "" if _escape(path, _PATH) == rest else rest
    return u


def _get_scheme(raw: str) -> tuple[str, str]:
    for i, c in enumerate(raw):
        if c.isascii() and c.isalpha():
            continue
        if c.isascii() and c.isdigit() or c in "+-.":
            if i == 0:
                return "", raw
            continue
        if c == ":":
            if i == 0:
                raise URLError("missing protocol scheme")
            return raw[:i], raw[i + 1 :]
        return "", raw
    return "", raw


def _parse_authority(authority: str) -> str:
    at = authority.rfind("@")
    host = _parse_host(authority[at + 1 :])
    if at >= 0:
        userinfo = authority[:at]
        if not all(c.isascii() and c.isalnum() or c in "-._:~!$&'()*+,;=%@" for c in userinfo):
            raise URLError("net/url: invalid userinfo")
        for part in userinfo.split(":", 1):
            _unescape(part, _USERINFO)
    return host


def _parse_host(host: str) -> str:
    if host.startswith("["):
        close = host.rfind("]")
        if close < 0:
            raise URLError("missing ']' in host")
        colon_port = host[close + 1 :]
        if not _valid_optional_port(colon_port):
            raise URLError(f"invalid port {_go_quote(colon_port)} after host")
        zone = host[:close].find("%25")
        if zone >= 0:
            return (
                _unescape(host[:zone], _HOST)
                + _unescape(host[zone:close], _ZONE)
                + _unescape(host[close:], _HOST)
            )
    else:
        colon = host.rfind(":")
        if colon >= 0 and not _valid_optional_port(host[colon:]):
            raise URLError(f"invalid port {_go_quote(host[colon:])} after host")
    return _unescape(host, _HOST)


def _valid_optional_port(port: str) -> bool:
    if port == "":
        return True
    return port[0] == ":" and all(c.isascii() and c.isdigit() for c in port[1:])


def _split_host_port(host_port: str) -> tuple[str, str]:
    host, port = host_port, ""
    colon = host.rfind(":")
    if colon >= 0 and _valid_optional_port(host[colon:]):
        host, port = host[:colon], host[colon + 1 :]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _should_escape(b: int, mode: str) -> bool:
    c = chr(b)
    if b < 0x80 and c.isalnum():
        return False
    if mode in (_HOST, _ZONE) and c in "!$&'()*+,;=:[]<>\"":
        return False
    if c in "-_.~":
        return False
    if c in "$&+,/:;=?@":
        if mode == _PATH:
            return c == "?"
        if mode == _USERINFO:
            return c in "@/?:"
        if mode == _QUERY:
            return True
    return True


def _unescape(s: str, mode: str) -> str:
    raw = s.encode()
    out = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == ord("%"):
            esc = raw[i : i + 3]
            if i + 2 >= len(raw) or chr(raw[i + 1]) not in _HEX or chr(raw[i + 2]) not in _HEX:
                raise URLError(f"invalid URL escape {_go_quote(raw[i : i + 3].decode(errors='replace'))}")
            v = int(esc[1:].decode(), 16)
            if mode == _HOST and int(chr(esc[1]), 16) < 8 and esc != b"%25":
                raise URLError(f"invalid URL escape {_go_quote(esc.decode())}")
            if mode == _ZONE and esc != b"%25" and v != 0x20 and _should_escape(v, _HOST):
                raise URLError(f"invalid URL escape {_go_quote(esc.decode())}")
            out.append(v)
            i += 3
            continue
        if b == ord("+") and mode == _QUERY:
            out.append(ord(" "))
        else:
            if mode in (_HOST, _ZONE) and b < 0x80 and _should_escape(b, mode):
                raise URLError(f"invalid character {_go_quote(chr(b))} in host name")
            out.append(b)
        i += 1
    return out.decode(errors="replace")


def _escape(s: str, mode: str) -> str:
    return "".join(chr(b) if not _should_escape(b, mode) else f"%{b:02X}" for b in s.encode())


def _valid_encoded(s: str) -> bool:
    for b in s.encode():
        if chr(b) in "!$&'()*+,;=:@[]%":
            continue
        if _should_escape(b, _PATH):
            return False
    return True


class URLValue:
    """The CEL value `url(...)` returns; its methods are the functions below."""

    def __init__(self, url: URL):
        self.url = url


def _url(value) -> URLValue | CELEvalError:
    if not isinstance(value, str):
        return _error(f"no such overload: url({_cel_type_name(value)})")
    try:
        return URLValue(parse_request_uri(value))
    except URLError as e:
        return _error(f"URL parse error during conversion from string: {e}")


def _is_url(value) -> ct.BoolType | CELEvalError:
    if not isinstance(value, str):
        return _error(f"no such overload: isURL({_cel_type_name(value)})")
    try:
        parse_request_uri(value)
    except URLError:
        return ct.BoolType(False)
    return ct.BoolType(True)


def _url_method(name, get):
    def method(value):
        if not isinstance(value, URLValue):
            return _error(f"no such overload: {_cel_type_name(value)}.{name}()")
        return get(value.url)

    return method


# ---------------------------------------------------------------------------------------------
# Strings, sizes, regular expressions


def _substring(value, start, end=None):
    if not isinstance(value, str) or not isinstance(start, int) or end is not None and not isinstance(end, int):
        return _error("no such overload: substring")
    n = len(value)
    if end is None:
        end = n
    if start < 0 or start > n:
        return _error(f"index out of range: {start}")
    if end < 0 or end > n:
        return _error(f"index out of range: {end}")
    if start > end:
        return _error(f"invalid substring range. start: {start}, end: {end}")
    return ct.StringType(value[start:end])


def _size(value):
    if isinstance(value, (str, bytes, list, dict)):
        return ct.IntType(len(value))
    return _error(f"no such overload: size({_cel_type_name(value)})")


_REGEX_CACHE: dict[str, object] = {}
_RE2_OPTIONS = re2.Options()
# The error is returned to the caller; RE2 would also print it to stderr.
_RE2_OPTIONS.log_errors = False


def compile_re2(pattern: str):
    """A pattern compiled with RE2, the syntax of Go's regexp and of CEL's matches()."""
    return re2.compile(pattern, _RE2_OPTIONS)


def _re2_error_text(e: Exception) -> str:
    return "; ".join(a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in e.args)


def _matches(value, pattern):
    if not isinstance(value, str) or not isinstance(pattern, str):
        return _error("no such overload: matches")
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        try:
            compiled = compile_re2(pattern)
        except re2.error as e:
            return _error(f"invalid regular expression {_go_quote(pattern)}: {_re2_error_text(e)}")
        _REGEX_CACHE[pattern] = compiled
    return ct.BoolType(compiled.search(value) is not None)


def _cel_type_name(value) -> str:
    if value is None:
        return "null"
    return {
        ct.BoolType: "bool",
        ct.IntType: "int",
        ct.UintType: "uint",
        ct.DoubleType: "double",
        ct.StringType: "string",
        ct.BytesType: "bytes",
        ct.ListType: "list",
        ct.MapType: "map",
        Duration: "duration",
        URLValue: "URL",
    }.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------
# The function table

# The first error a function of ours returns during one evaluation. celpy wraps errors in the
# errors of the operators around them (`a || b`, `c ? x : y`), whose text is then a dump of its
# internals; the innermost error is the one a person can act on.
_first_error: contextvars.ContextVar[list | None] = contextvars.ContextVar("first_error", default=None)


def _error(message: str) -> CELEvalError:
    errors = _first_error.get()
    if errors is not None and not errors:
        errors.append(message)
    return CELEvalError(message)


FUNCTIONS = {
    "duration": _duration,
    "size": _size,
    "matches": _matches,
    "substring": _substring,
    "isURL": _is_url,
    "url": _url,
    "getScheme": _url_method("getScheme", lambda u: ct.StringType(u.scheme)),
    "getHost": _url_method("getHost", lambda u: ct.StringType(u.host)),
    "getHostname": _url_method("getHostname", lambda u: ct.StringType(u.hostname())),
    "getPort": _url_method("getPort", lambda u: ct.StringType(u.port())),
    "getEscapedPath": _url_method("getEscapedPath", lambda u: ct.StringType(u.escaped_path())),
    "getQuery": _url_method(
        "getQuery",
        lambda u: ct.MapType(
            {ct.StringType(k): ct.ListType([ct.StringType(v) for v in vs]) for k, vs in u.query().items()}
        ),
    ),
}

# Macros and standard functions that celpy evaluates as cel-go does for the values rules see;
# each is exercised by test_crd_schema.py.
CELPY_BUILTINS = frozenset({"has", "all", "exists", "exists_one", "contains", "startsWith", "endsWith"})

SUPPORTED_FUNCTIONS = frozenset(FUNCTIONS) | CELPY_BUILTINS


# ---------------------------------------------------------------------------------------------
# Values typed from the schema


def to_cel(schema: dict | None, value):
    """`value` (decoded JSON) as the CEL value the API server binds for a node of `schema`."""
    schema = schema or {}
    if value is None:
        return None
    if isinstance(value, bool):
        return ct.BoolType(value)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        return ct.MapType(
            {
                ct.StringType(k): to_cel(props.get(k, addl if isinstance(addl, dict) else None), v)
                for k, v in value.items()
            }
        )
    if isinstance(value, list):
        return ct.ListType([to_cel(schema.get("items"), v) for v in value])
    if isinstance(value, int):
        if schema.get("type") == "number":
            return ct.DoubleType(float(value))
        return ct.IntType(value)
    if isinstance(value, float):
        return ct.DoubleType(value)
    if isinstance(value, str):
        fmt = (schema.get("format") or "").replace("-", "")
        # The formats the API server gives their own CEL type; a value that does not parse
        # stays a string (schema validation reports it).
        if fmt == "byte":
            try:
                return ct.BytesType(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                pass
        elif fmt == "duration":
            try:
                return Duration(parse_go_duration(value))
            except DurationError:
                pass
        elif fmt in ("date", "datetime"):
            try:
                return ct.TimestampType(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")))
            except ValueError:
                pass
        return ct.StringType(value)
    raise TypeError(f"cannot convert {type(value).__name__} to CEL")


# ---------------------------------------------------------------------------------------------
# Rules

_ENV = celpy.Environment()


def called_functions(ast) -> set[str]:
    """Names of the functions, methods and macros an expression calls."""
    names = set()
    for node in ast.iter_subtrees():
        if node.data == "ident_arg":
            names.add(str(node.children[0]))
        elif node.data == "member_dot_arg":
            names.add(str(node.children[1]))
        elif node.data == "dot_ident_arg":
            names.add(str(node.children[0]))
    return names


def referenced_identifiers(ast) -> set[str]:
    return {str(node.children[0]) for node in ast.iter_subtrees() if node.data == "ident"}


class RuleError(Exception):
    """The rule could not be compiled or evaluated; the text says why."""


class Rule:
    """One CEL expression, compiled once. Compilation problems are kept, not raised: they are
    reported for every value the rule applies to."""

    def __init__(self, text: str):
        self.text = text
        self.problem: str | None = None
        self.functions: set[str] = set()
        self.identifiers: set[str] = set()
        try:
            ast = _ENV.compile(text)
        except celpy.CELParseError as e:
            line, column = getattr(e, "line", None), getattr(e, "column", None)
            where = f" at line {line}, column {column}" if line is not None else ""
            self.problem = f"does not compile: syntax error{where}"
            return
        self.functions = called_functions(ast)
        self.identifiers = referenced_identifiers(ast)
        unsupported = sorted(self.functions - SUPPORTED_FUNCTIONS)
        if unsupported:
            self.problem = f"calls functions this validator does not implement: {', '.join(unsupported)}"
            return
        self.program = _ENV.program(ast, functions=FUNCTIONS)

    @property
    def is_transition_rule(self) -> bool:
        return "oldSelf" in self.identifiers

    def evaluate(self, schema: dict | None, value):
        """The rule's result for `self` = `value` (plain decoded JSON), a Python bool or str for
        CEL bools and strings. Raises RuleError."""
        if self.problem:
            raise RuleError(self.problem)
        errors: list[str] = []
        token = _first_error.set(errors)
        try:
            result = self.program.evaluate({"self": to_cel(schema, value)})
        except CELEvalError as e:
            result = e
        finally:
            _first_error.reset(token)
        if isinstance(result, CELEvalError):
            raise RuleError(errors[0] if errors else _celpy_error_text(result))
        if isinstance(result, ct.BoolType):
            return bool(result)
        if isinstance(result, ct.StringType):
            return str(result)
        return result


# How celpy writes an error it wraps into the text of the error that wraps it.
_WRAPPED_ERROR = re.compile(r"""CELEvalError\(\*\((["'])(.*?)\1, """)


def _celpy_error_text(e: CELEvalError) -> str:
    text = str(e.args[0]) if e.args else "evaluation error"
    details = e.args[2] if len(e.args) >= 3 and isinstance(e.args[2], tuple) else ()
    if text.startswith("found no matching overload"):
        # An operator applied to an error, or to values it does not take: the inner error, or
        # the TypeError of the values, says what went wrong.
        blob = " ".join(map(str, details))
        wrapped = _WRAPPED_ERROR.search(blob)
        if wrapped:
            return wrapped.group(2)
        if details:
            return "; ".join(map(str, details))
    # celpy appends a dump of the whole activation to lookup errors.
    return text.split(" (in activation")[0]
