"""Validate Kubernetes manifests against the CustomResourceDefinitions in e2e/schemas/, as the API
server does on `kubectl apply --validate=strict`, without a cluster.

A document is matched to the CRD of its `apiVersion` (group and a served version) and `kind`, and
checked against that version's `openAPIV3Schema` the way the API server applies it:

- the document is decoded as kubectl sends it: YAML becomes JSON, so `8080.0` arrives as the
  integer 8080, timestamps stay strings, and a key given twice is an error;
- unknown fields are errors (strict field validation) and are pruned, null values of fields that
  are not nullable are dropped, and schema defaults are filled in, before anything is validated;
- types, `required`, `enum`, bounds, lengths, sizes, `pattern`, the formats the API server checks
  (`int32`, `double` and the like are not among them: it strips them), `oneOf`/`anyOf`/`allOf`/`not`,
  `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`, and the uniqueness that
  `x-kubernetes-list-type: set|map` asks for;
- `metadata` as ObjectMeta: a name that is a DNS-1123 subdomain, a namespace that is a DNS-1123
  label, labels and annotations that are maps of strings with valid keys (and label values);
- every `x-kubernetes-validations` CEL rule (see k8s_cel.py), on the pruned and defaulted value.
  A rule that cannot be evaluated is an error. As on the server, a rule is not run on a value that
  has type, required, enum or size errors; unlike the server, which then skips every rule of the
  object, only the rules above such errors wait, and each one is reported as not checked.

On create the server resets `status` when the version has a status subresource, so there only
unknown fields are reported.

    python e2e/crd_schema.py [--strict-kinds] FILE|DIR...

checks every document of each file (a directory stands for the *.yaml and *.yml files under it),
prints `FILE: Kind/name: ok`, the errors, or `not checked (no schema)` for kinds without a CRD here
(core kinds, IstioOperator, ...; failures with --strict-kinds), and exits 1 on any error.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import math
import re
import sys
from pathlib import Path

import yaml

import k8s_cel

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SCHEMA_FILES = (SCHEMA_DIR / "istio-crds.yaml", SCHEMA_DIR / "flagger-crds.yaml")


class SchemaError(Exception):
    """A CRD this validator cannot apply faithfully (an unsupported keyword, a bad file)."""


class NoSchema(Exception):
    """No CRD here defines the document's kind."""


# ---------------------------------------------------------------------------------------------
# YAML as kubectl decodes it


class ManifestLoader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, brought closer to the Go decoder kubectl uses: timestamps
    stay strings, `1:30` is a string rather than a base-60 number, `1e3` is a number, and a key
    given twice is an error (strict decoding)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_REPLACED_TAGS = ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# PyYAML's int and float without base 60, and floats as Go's YAML decoder reads them.
ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def load_documents(text: str) -> list:
    """The documents of a (multi-document) YAML text, empty ones left out."""
    return [d for d in yaml.load_all(text, Loader=ManifestLoader) if d is not None]


def _as_json(value, path: str, errors: list[str]):
    """`value` as the API server receives it from kubectl: via JSON."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = _json_key(k)
            out[key] = _as_json(v, _child(path, key), errors)
        return out
    if isinstance(value, (list, tuple)):
        return [_as_json(v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if isinstance(value, float):
        if not math.isfinite(value):
            errors.append(f"{path}: {value} is not a JSON number")
            return None
        # encoding/json writes 8080.0 as 8080, which the server decodes as an integer.
        if value.is_integer() and abs(value) < 1e21:
            as_int = int(value)
            return as_int if -(2**63) <= as_int < 2**63 else value
        return value
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        # Beyond int64 the server decodes a float, which no longer passes as an integer.
        return float(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


def _json_key(key) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


# ---------------------------------------------------------------------------------------------
# CRDs


_SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "format",
        "description",
        "title",
        "nullable",
        "default",
        "example",
        "externalDocs",
        "enum",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "oneOf",
        "anyOf",
        "allOf",
        "not",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        # Only tells server-side apply how to merge; nothing to validate.
        "x-kubernetes-map-type",
        "x-kubernetes-validations",
    }
)
_RULE_KEYS = frozenset({"rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf"})

# The formats the API server validates (k8s.io/apiextensions-apiserver supportedFormats, with its
# "-" removed); it strips every other format before validating.
_CHECKED_FORMATS = frozenset(
    {
        "bsonobjectid", "uri", "email", "hostname", "ipv4", "ipv6", "cidr", "mac", "uuid", "uuid3",
        "uuid4", "uuid5", "isbn", "isbn10", "isbn13", "creditcard", "ssn", "hexcolor", "rgbcolor",
        "byte", "password", "date", "duration", "datetime",
    }
)  # fmt: skip


_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})
_IMPLEMENTED_FORMATS = frozenset({"byte", "datetime", "date", "duration", "password"})


@dataclasses.dataclass
class Version:
    name: str
    served: bool
    schema: dict
    status_subresource: bool


@dataclasses.dataclass
class Crd:
    group: str
    kind: str
    namespaced: bool
    versions: dict[str, Version]

    def served(self) -> list[str]:
        return [f"{self.group}/{v}" for v, ver in self.versions.items() if ver.served]


class Schemas:
    """The CRDs of some files, and validation of documents against them."""

    def __init__(self, files=SCHEMA_FILES):
        self.crds: dict[str, list[Crd]] = {}
        self.rules: dict[str, k8s_cel.Rule] = {}
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        for f in files:
            for doc in yaml.load_all(Path(f).read_text(), Loader=loader):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                crd = self._load_crd(doc, f)
                self.crds.setdefault(crd.kind, []).append(crd)

    def _load_crd(self, doc: dict, where) -> Crd:
        spec = doc["spec"]
        crd = Crd(spec["group"], spec["names"]["kind"], spec.get("scope") == "Namespaced", {})
        for v in spec["versions"]:
            schema = ((v.get("schema") or {}).get("openAPIV3Schema")) or None
            if schema is None:
                raise SchemaError(f"{where}: {crd.kind} {v['name']} has no openAPIV3Schema")
            self._check_schema(schema, f"{where}: {crd.kind} {v['name']}", "")
            status = "status" in (v.get("subresources") or {})
            crd.versions[v["name"]] = Version(v["name"], bool(v.get("served")), schema, status)
        return crd

    def _check_schema(self, s: dict, where: str, path: str) -> None:
        at = f"{where}: {path or '<root>'}"
        unknown = sorted(set(s) - _SCHEMA_KEYWORDS)
        if unknown:
            raise SchemaError(f"{at}: unsupported schema keyword {', '.join(unknown)}")
        if s.get("type", "object") not in _TYPES:
            raise SchemaError(f"{at}: unknown type {s['type']!r}")
        fmt = (s.get("format") or "").replace("-", "")
        if fmt in _CHECKED_FORMATS and fmt not in _IMPLEMENTED_FORMATS:
            raise SchemaError(f"{at}: format {s['format']!r} is checked by the API server but not by this validator")
        if "pattern" in s:
            try:
                _regex(s["pattern"])
            except Exception as e:
                raise SchemaError(f"{where}: {path or '<root>'}: pattern {s['pattern']!r} does not compile: {e}")
        for r in s.get("x-kubernetes-validations", []):
            extra = sorted(set(r) - _RULE_KEYS)
            if extra:
                raise SchemaError(f"{where}: {path or '<root>'}: unsupported rule field {', '.join(extra)}")
            for text in (r["rule"], r.get("messageExpression")):
                if text is not None and text not in self.rules:
                    self.rules[text] = k8s_cel.Rule(text)
        for name, sub in (s.get("properties") or {}).items():
            self._check_schema(sub, where, f"{path}.{name}")
        for key in ("items", "additionalProperties", "not"):
            if isinstance(s.get(key), dict):
                self._check_schema(s[key], where, f"{path}.{key}")
        for key in ("oneOf", "anyOf", "allOf"):
            for i, sub in enumerate(s.get(key, [])):
                self._check_schema(sub, where, f"{path}.{key}[{i}]")

    def lookup(self, api_version, kind) -> tuple[Crd, Version]:
        """The CRD and version for a document's apiVersion and kind. Raises NoSchema when no CRD
        here defines the kind, ValueError (its text an error message) for a known kind under an
        apiVersion that does not serve it."""
        candidates = self.crds.get(kind, [])
        if not candidates:
            raise NoSchema(kind)
        group, _, version = api_version.rpartition("/")
        for crd in candidates:
            if crd.group == group:
                ver = crd.versions.get(version)
                if ver is None or not ver.served:
                    raise ValueError(
                        f'apiVersion: "{api_version}" is not served for {kind}; served: {", ".join(crd.served())}'
                    )
                return crd, ver
        served = ", ".join(v for crd in candidates for v in crd.served())
        raise ValueError(f'apiVersion: "{api_version}" has no kind {kind}; {kind} is served as {served}')

    def validate(self, doc, rule_log: list | None = None) -> list[str]:
        """Every error of one document (a dict as decoded from YAML), each "path: problem".
        Raises NoSchema for a kind that no CRD here defines. `rule_log`, if given, gets a
        (rule, outcome) pair for every rule met: True, False, "error", "not checked" or
        "not on create"."""
        if not isinstance(doc, dict):
            return [f"document: {_show(doc)} is not of type object"]
        errors: list[str] = []
        doc = _as_json(doc, "", errors)
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        for field, value in (("apiVersion", api_version), ("kind", kind)):
            if value is None:
                errors.append(f"{field}: missing required field")
            elif not isinstance(value, str):
                errors.append(f"{field}: {_show(value)} is not of type string")
        if errors and not (isinstance(api_version, str) and isinstance(kind, str)):
            return errors
        try:
            crd, version = self.lookup(api_version, kind)
        except ValueError as e:
            return errors + [str(e)]
        v = _Validation(self.rules, rule_log)
        v.root(version, crd, doc)
        return errors + v.errors


_DEFAULT: Schemas | None = None


def default_schemas() -> Schemas:
    """The CRDs in e2e/schemas/, loaded once."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Schemas()
    return _DEFAULT


def validate(doc, schemas: Schemas | None = None, rule_log: list | None = None) -> list[str]:
    """Every error of one document against the CRDs in e2e/schemas/. Raises NoSchema."""
    return (schemas or default_schemas()).validate(doc, rule_log)


# ---------------------------------------------------------------------------------------------
# Validation of one document


@dataclasses.dataclass
class _Mode:
    # Only unknown fields are reported (a status the server resets on create).
    prune_only: bool = False
    # Inside oneOf/anyOf/allOf/not: value checks only, nothing pruned, defaulted or run as CEL.
    value_only: bool = False


class _Validation:
    def __init__(self, rules: dict[str, k8s_cel.Rule], rule_log: list | None = None):
        self.rules = rules
        self.rule_log = rule_log if rule_log is not None else []
        self.errors: list[str] = []

    def error(self, mode: _Mode, path: str, message: str, sink: list[str] | None = None) -> None:
        if mode.prune_only:
            return
        (self.errors if sink is None else sink).append(f"{path}: {message}")

    def root(self, version: Version, crd: Crd, doc: dict) -> None:
        schema = version.schema
        props = schema.get("properties") or {}
        pruned = {}
        for key, value in doc.items():
            if key in ("apiVersion", "kind"):
                pruned[key] = value
            elif key == "metadata":
                pruned[key] = _metadata(self, value, crd, props.get("metadata"))
        if "metadata" not in doc:
            self.errors.append("metadata.name: missing required field")
        rest = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        spec_schema = dict(schema)
        spec_schema["properties"] = {k: v for k, v in props.items() if k not in ("apiVersion", "kind", "metadata")}
        blocked = False
        for key, value in rest.items():
            sub = spec_schema["properties"].get(key)
            if sub is None:
                self.errors.append(f"{key}: unknown field")
                continue
            if value is None and not sub.get("nullable"):
                continue
            mode = _Mode(prune_only=key == "status" and version.status_subresource)
            pruned[key], b = self.node(sub, value, key, mode)
            blocked = blocked or b and not mode.prune_only
        for key, sub in spec_schema["properties"].items():
            if key not in pruned and "default" in sub:
                pruned[key], _ = self.node(sub, copy.deepcopy(sub["default"]), key, _Mode())
        blocked = self.value_checks(spec_schema, pruned, "", _Mode()) or blocked
        self.run_rules(schema, pruned, "", blocked, root=True)

    # -- one schema node -----------------------------------------------------------------------

    def node(self, schema: dict, value, path: str, mode: _Mode, sink: list[str] | None = None):
        """Validates `value`; returns it pruned and defaulted, and whether it has errors that
        keep CEL rules from running on it (type, required, enum, too long, too many)."""
        if value is None:
            if schema.get("nullable"):
                return None, False
            self.error(mode, path, f"null is not of type {_type_name(schema)}", sink)
            return None, True
        if not _type_ok(schema, value):
            self.error(mode, path, f"{_show(value)} is not of type {_type_name(schema)}", sink)
            if not mode.value_only and not mode.prune_only:
                self.run_rules(schema, value, path, blocked=True)
            return value, True
        blocked = False
        if isinstance(value, dict):
            value, blocked = self.object(schema, value, path, mode, sink)
        elif isinstance(value, list):
            value, blocked = self.array(schema, value, path, mode, sink)
        if self.value_checks(schema, value, path, mode, sink):
            blocked = True
        if not mode.value_only and not mode.prune_only:
            self.run_rules(schema, value, path, blocked)
        return value, blocked

    def object(self, schema, value: dict, path, mode, sink):
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        if not mode.value_only:
            value = dict(value)
            for key, sub in props.items():
                if "default" in sub and (key not in value or value[key] is None and not sub.get("nullable")):
                    value[key] = copy.deepcopy(sub["default"])
        out = {}
        blocked = False
        for key, child in value.items():
            if key in props:
                sub, child_path = props[key], _child(path, key)
            elif isinstance(addl, dict):
                sub, child_path = addl, f"{path}[{key}]"
            elif addl is True or preserve or mode.value_only:
                out[key] = child
                continue
            else:
                self.errors.append(f"{_child(path, key)}: unknown field")
                continue
            if child is None and not sub.get("nullable"):
                if not mode.value_only and "default" in sub:
                    child = copy.deepcopy(sub["default"])
                elif not mode.value_only:
                    continue
            out[key], b = self.node(sub, child, child_path, mode, sink)
            blocked = blocked or b
        return out, blocked

    def array(self, schema, value: list, path, mode, sink):
        items = schema.get("items")
        out = []
        blocked = False
        for i, item in enumerate(value):
            if items is None:
                out.append(item)
                continue
            if item is None and not items.get("nullable") and "default" in items and not mode.value_only:
                item = copy.deepcopy(items["default"])
            v, b = self.node(items, item, f"{path}[{i}]", mode, sink)
            out.append(v)
            blocked = blocked or b
        if not mode.value_only:
            self.list_type(schema, out, path, mode)
        return out, blocked

    def list_type(self, schema, items: list, path, mode) -> None:
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "set":
            seen = []
            for i, item in enumerate(items):
                if item in seen:
                    self.error(mode, f"{path}[{i}]", f"duplicate entry {_show(item)}")
                seen.append(item)
        elif list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen = []
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    continue
                key = [item.get(k) for k in keys]
                if key in seen:
                    shown = ", ".join(f"{k} {_show(v)}" for k, v in zip(keys, key))
                    self.error(mode, f"{path}[{i}]", f"duplicate entry with {shown}")
                seen.append(key)

    def value_checks(self, schema, value, path, mode, sink=None) -> bool:
        """The checks of a node that do not descend into it. True if one that keeps CEL rules
        from running failed."""
        blocked = False
        p = path or "document"

        def fail(message, blocking=False):
            nonlocal blocked
            self.error(mode, p, message, sink)
            blocked = blocked or blocking

        if "enum" in schema and value not in schema["enum"]:
            fail(f"{_show(value)} is not one of {', '.join(_show_enum(e) for e in schema['enum'])}", True)
        if isinstance(value, dict):
            for key in schema.get("required", []):
                if key not in value:
                    self.error(mode, _child(path, key), "missing required field", sink)
                    blocked = True
            n = len(value)
            if "maxProperties" in schema and n > schema["maxProperties"]:
                fail(f"has {n} properties, more than the maximum {schema['maxProperties']}", True)
            if "minProperties" in schema and n < schema["minProperties"]:
                fail(f"has {n} properties, fewer than the minimum {schema['minProperties']}")
        elif isinstance(value, list):
            n = len(value)
            if "maxItems" in schema and n > schema["maxItems"]:
                fail(f"has {n} items, more than the maximum {schema['maxItems']}", True)
            if "minItems" in schema and n < schema["minItems"]:
                fail(f"has {n} items, fewer than the minimum {schema['minItems']}")
        elif isinstance(value, str):
            n = len(value)
            if "maxLength" in schema and n > schema["maxLength"]:
                fail(f"{_show(value)} is longer than the maximum length {schema['maxLength']}", True)
            if "minLength" in schema and n < schema["minLength"]:
                fail(f"{_show(value)} is shorter than the minimum length {schema['minLength']}")
            if "pattern" in schema and not _regex(schema["pattern"]).search(value):
                fail(f"{_show(value)} does not match pattern '{schema['pattern']}'")
            fmt = schema.get("format")
            if fmt and fmt.replace("-", "") in _CHECKED_FORMATS and not _format_ok(fmt.replace("-", ""), value):
                fail(f"{_show(value)} is not a valid {fmt}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self.number_checks(schema, value, fail)
        self.composition(schema, value, path, mode, fail, sink)
        return blocked

    @staticmethod
    def number_checks(schema, value, fail) -> None:
        if "minimum" in schema:
            lo = schema["minimum"]
            if schema.get("exclusiveMinimum") and value <= lo:
                fail(f"{_show(value)} is not greater than the exclusive minimum {_show(lo)}")
            elif value < lo:
                fail(f"{_show(value)} is less than the minimum {_show(lo)}")
        if "maximum" in schema:
            hi = schema["maximum"]
            if schema.get("exclusiveMaximum") and value >= hi:
                fail(f"{_show(value)} is not less than the exclusive maximum {_show(hi)}")
            elif value > hi:
                fail(f"{_show(value)} is greater than the maximum {_show(hi)}")
        if "multipleOf" in schema:
            m = schema["multipleOf"]
            q = value / m
            if not math.isclose(q, round(q), rel_tol=0, abs_tol=1e-9):
                fail(f"{_show(value)} is not a multiple of {_show(m)}")

    def composition(self, schema, value, path, mode, fail, sink) -> None:
        def matches(sub) -> bool:
            return not self.branch_errors(sub, value, path)

        one_of = schema.get("oneOf")
        if one_of:
            hits = sum(1 for sub in one_of if matches(sub))
            if hits != 1:
                fail(_one_of_message(one_of, value, hits))
        any_of = schema.get("anyOf")
        if any_of and not any(matches(sub) for sub in any_of):
            fail(f"{_show(value)} matches none of: {' | '.join(_describe(s) for s in any_of)}")
        for sub in schema.get("allOf", []):
            for e in self.branch_errors(sub, value, path):
                if not mode.prune_only:
                    (self.errors if sink is None else sink).append(e)
        if "not" in schema and matches(schema["not"]):
            fail(f"must not match: {_describe(schema['not'])}")

    def branch_errors(self, schema, value, path) -> list[str]:
        sink: list[str] = []
        self.node(schema, value, path, _Mode(value_only=True), sink=sink)
        return sink

    # -- CEL -------------------------------------------------------------------------------------

    def run_rules(self, schema, value, path, blocked, root=False) -> None:
        rules = schema.get("x-kubernetes-validations") or []
        if not rules:
            return
        p = path or "document"
        cel_value = value
        if root:
            # Rules at the root see only the name and generateName of the metadata.
            meta = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
            cel_value = dict(value)
            cel_value["metadata"] = {k: meta[k] for k in ("name", "generateName") if k in meta}
        for r in rules:
            rule = self.rules[r["rule"]]
            if rule.is_transition_rule:
                # Rules on oldSelf compare an update with the stored object; the server runs
                # them on updates only, and applying a manifest is checked as a create here.
                self.rule_log.append((r["rule"], "not on create"))
                continue
            message = r.get("message") or f"failed rule: {r['rule'].strip()}"
            where = p + (r.get("fieldPath") or "")
            if blocked:
                self.rule_log.append((r["rule"], "not checked"))
                self.errors.append(f"{where}: rule not checked because of the errors above: {message}")
                continue
            try:
                result = rule.evaluate(schema, cel_value)
            except k8s_cel.RuleError as e:
                self.rule_log.append((r["rule"], "error"))
                self.errors.append(f"{where}: rule could not be evaluated{_for_value(value)} ({message}): {e}")
                continue
            self.rule_log.append((r["rule"], result))
            if not isinstance(result, bool):
                self.errors.append(f"{where}: rule did not evaluate to a bool ({message}): {result!r}")
                continue
            if not result:
                if r.get("messageExpression"):
                    # As on the server, a messageExpression that fails falls back to message.
                    try:
                        m = self.rules[r["messageExpression"]].evaluate(schema, cel_value)
                        if isinstance(m, str) and m.strip():
                            message = str(m)
                    except k8s_cel.RuleError:
                        pass
                self.errors.append(f"{where}: {_scalar_prefix(value)}fails rule: {message}")


def _for_value(value) -> str:
    return "" if isinstance(value, (dict, list)) else f" for {_show(value)}"


def _scalar_prefix(value) -> str:
    if isinstance(value, (dict, list)):
        return ""
    return f"{_show(value)} "


def _one_of_message(branches: list[dict], value, hits: int) -> str:
    present = list(value) if isinstance(value, dict) else []
    singles = []
    none_branch = None
    for b in branches:
        if set(b) == {"required"} and len(b["required"]) == 1:
            singles.append(b["required"][0])
        elif (
            set(b) == {"not"}
            and set(b["not"]) == {"anyOf"}
            and all(set(s) == {"required"} and len(s["required"]) == 1 for s in b["not"]["anyOf"])
        ):
            none_branch = [s["required"][0] for s in b["not"]["anyOf"]]
        else:
            singles = None
            break
    if singles is not None and (none_branch is None or sorted(none_branch) == sorted(singles)):
        found = [k for k in singles if k in present]
        found_text = ", ".join(found) if found else "none"
        if none_branch is not None:
            return f"only one of {', '.join(singles)} may be set, found {found_text}"
        return f"exactly one of {', '.join(singles)} must be set, found {found_text}"
    alternatives = " | ".join(_describe(b) for b in branches)
    return f"must match exactly one of: {alternatives} (matches {hits})"


def _describe(schema: dict) -> str:
    if set(schema) == {"required"}:
        return "required " + ", ".join(schema["required"])
    if set(schema) == {"type"}:
        return schema["type"]
    if set(schema) == {"not"}:
        return f"not ({_describe(schema['not'])})"
    if set(schema) == {"anyOf"}:
        return "any of (" + " | ".join(_describe(s) for s in schema["anyOf"]) + ")"
    return json.dumps({k: v for k, v in schema.items() if k != "description"}, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# metadata


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SUBDOMAIN_RULE = "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"
_LABEL_RULE = "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
_NAME_RULE = "letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most 63 characters"

# ObjectMeta fields and the JSON types they decode from.
_OBJECT_META = {
    "name": str,
    "generateName": str,
    "namespace": str,
    "selfLink": str,
    "uid": str,
    "resourceVersion": str,
    "generation": int,
    "creationTimestamp": (str, type(None)),
    "deletionTimestamp": (str, type(None)),
    "deletionGracePeriodSeconds": int,
    "labels": dict,
    "annotations": dict,
    "ownerReferences": list,
    "finalizers": list,
    "managedFields": list,
}
_JSON_TYPE_NAMES = {str: "string", int: "integer", dict: "object", list: "array"}


def _is_subdomain(s: str) -> bool:
    return len(s) <= 253 and bool(_DNS1123_SUBDOMAIN.match(s))


def _is_qualified_name(s: str) -> bool:
    prefix, slash, name = s.rpartition("/")
    if slash and not (prefix and _is_subdomain(prefix)):
        return False
    return len(name) <= 63 and bool(_QUALIFIED_NAME.match(name))


def _metadata(v: _Validation, meta, crd: Crd, schema: dict | None):
    errors = v.errors
    if not isinstance(meta, dict):
        errors.append(f"metadata: {_show(meta)} is not of type object")
        return meta
    out = {}
    for key, value in meta.items():
        want = _OBJECT_META.get(key)
        if want is None:
            errors.append(f"metadata.{key}: unknown field")
            continue
        if value is None:
            continue
        ok = isinstance(value, want) and not isinstance(value, bool)
        if not ok:
            name = _JSON_TYPE_NAMES.get(want if isinstance(want, type) else want[0])
            errors.append(f"metadata.{key}: {_show(value)} is not of type {name}")
            continue
        out[key] = value
    name = out.get("name")
    if name is None:
        errors.append("metadata.name: missing required field")
    elif not _is_subdomain(name):
        errors.append(f"metadata.name: {_show(name)} is not a valid DNS-1123 subdomain ({_SUBDOMAIN_RULE})")
    namespace = out.get("namespace")
    if namespace is not None:
        if not crd.namespaced:
            errors.append(f"metadata.namespace: not allowed, {crd.kind} is cluster-scoped")
        elif len(namespace) > 63 or not _DNS1123_LABEL.match(namespace):
            errors.append(f"metadata.namespace: {_show(namespace)} is not a valid DNS-1123 label ({_LABEL_RULE})")
    for key, value in (out.get("labels") or {}).items():
        where = f"metadata.labels[{key}]"
        if not _is_qualified_name(key):
            errors.append(f"{where}: not a valid label key (an optional DNS subdomain prefix and '/', then {_NAME_RULE})")
        if not isinstance(value, str):
            errors.append(f"{where}: {_show(value)} is not of type string")
        elif value and (len(value) > 63 or not _QUALIFIED_NAME.match(value)):
            errors.append(f"{where}: {_show(value)} is not a valid label value ({_NAME_RULE}, or empty)")
    size = 0
    for key, value in (out.get("annotations") or {}).items():
        where = f"metadata.annotations[{key}]"
        if not _is_qualified_name(key.lower()):
            errors.append(f"{where}: not a valid annotation key (an optional DNS subdomain prefix and '/', then {_NAME_RULE})")
        if not isinstance(value, str):
            errors.append(f"{where}: {_show(value)} is not of type string")
        else:
            size += len(key) + len(value)
    if size > 256 * 1024:
        errors.append(f"metadata.annotations: {size} bytes, more than the limit of 262144")
    for i, f in enumerate(out.get("finalizers") or []):
        if not isinstance(f, str):
            errors.append(f"metadata.finalizers[{i}]: {_show(f)} is not of type string")
    # A CRD may restrict the name further (only name and generateName are allowed there).
    for key in ("name", "generateName"):
        sub = ((schema or {}).get("properties") or {}).get(key)
        if sub and isinstance(out.get(key), str):
            v.value_checks(sub, out[key], f"metadata.{key}", _Mode())
    return out


# ---------------------------------------------------------------------------------------------
# Small helpers


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _show_enum(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _type_name(schema: dict) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "integer or string"
    return schema.get("type") or "any"


def _type_ok(schema: dict, value) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    t = schema.get("type")
    if t is None:
        return True
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # number


_REGEXES: dict[str, object] = {}


def _regex(pattern: str):
    # Go's regexp is RE2, which the API server matches patterns with (unanchored).
    if pattern not in _REGEXES:
        _REGEXES[pattern] = k8s_cel.compile_re2(pattern)
    return _REGEXES[pattern]


_BASE64 = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$")
_DATE_TIME = re.compile(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")


def _is_date(s: str) -> bool:
    try:
        datetime.date.fromisoformat(s)
    except ValueError:
        return False
    return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", s))


def _format_ok(fmt: str, value: str) -> bool:
    """The API server's check of one of _IMPLEMENTED_FORMATS (a CRD with another checked format
    is refused when it is loaded)."""
    if fmt == "byte":
        return bool(_BASE64.match(value))
    if fmt == "datetime":
        date, sep, time = value.lower().partition("t")
        if not sep or not _is_date(date):
            return False
        m = _DATE_TIME.match(time)
        return bool(m) and m.group(1) <= "23" and m.group(2) <= "59" and m.group(3) <= "59"
    if fmt == "date":
        return _is_date(value)
    if fmt == "duration":
        try:
            k8s_cel.parse_go_duration(value)
        except k8s_cel.DurationError:
            return False
        return True
    return True  # password: any string


# ---------------------------------------------------------------------------------------------
# Command line


def _label(doc, index: int) -> str:
    if not isinstance(doc, dict):
        return f"document {index}"
    kind = doc.get("kind") if isinstance(doc.get("kind"), str) else "<no kind>"
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = meta.get("name")
    return f"{kind}/{name}" if isinstance(name, str) and name else f"{kind} (document {index})"


def manifest_files(path: Path) -> list[Path]:
    """`path` itself, or the YAML files under a directory."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


@dataclasses.dataclass
class Checked:
    """One document of a file (or the file, when it cannot be read) and what became of it."""

    path: Path
    label: str
    kind: str | None
    status: str  # "ok", "unchecked" (no schema) or "failed"
    errors: list[str]

    def lines(self) -> list[str]:
        if self.status == "ok":
            return [f"{self.path}: {self.label}: ok"]
        if self.status == "unchecked":
            return [f"{self.path}: {self.label}: not checked (no schema)"]
        return [f"{self.path}: {self.label}: {e}" if self.label else f"{self.path}: {e}" for e in self.errors]


def check_file(path: Path, schemas: Schemas, strict_kinds: bool = False) -> list[Checked]:
    """Every document of one file, checked. With `strict_kinds` a kind without a CRD fails."""
    try:
        docs = load_documents(Path(path).read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return [Checked(path, "", None, "failed", [f"invalid YAML{where}: {e.problem}"])]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        return [Checked(path, "", None, "failed", [f"cannot read: {e}"])]
    results = []
    for i, doc in enumerate(docs, 1):
        kind = doc.get("kind") if isinstance(doc, dict) and isinstance(doc.get("kind"), str) else None
        label = _label(doc, i)
        try:
            errors = schemas.validate(doc)
        except NoSchema:
            results.append(Checked(path, label, kind, "failed" if strict_kinds else "unchecked", []))
            if strict_kinds:
                results[-1].errors.append("not checked (no schema)")
            continue
        results.append(Checked(path, label, kind, "failed" if errors else "ok", errors))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Validate Kubernetes manifests against the CRD schemas in e2e/schemas/ "
        "(strict field validation and CEL rules, as kubectl apply --validate=strict)."
    )
    parser.add_argument(
        "paths", nargs="+", metavar="FILE|DIR", help="YAML files (one or more documents each), or directories of them"
    )
    parser.add_argument(
        "--strict-kinds", action="store_true", help="fail on documents whose kind has no CRD in e2e/schemas/"
    )
    args = parser.parse_args(argv)
    schemas = default_schemas()
    totals = {"ok": 0, "unchecked": 0, "failed": 0}
    files = []
    empty = 0
    for p in args.paths:
        found = manifest_files(Path(p))
        if not found:
            print(f"{p}: no YAML files")
            empty += 1
        files += found
    for f in files:
        for checked in check_file(f, schemas, args.strict_kinds):
            for line in checked.lines():
                print(line)
            totals[checked.status] += 1
    n = sum(totals.values())
    print(
        f"{n} document{'s' if n != 1 else ''} in {len(files)} file{'s' if len(files) != 1 else ''}: "
        f"{totals['ok']} ok, {totals['unchecked']} not checked (no schema), {totals['failed']} with errors"
    )
    return 1 if totals["failed"] or empty else 0


if __name__ == "__main__":
    sys.exit(main())
