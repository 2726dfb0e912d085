"""Kubernetes manifests checked against the CustomResourceDefinitions in e2e/schemas/ as
`kubectl apply --validate=strict` has the API server check them, without a cluster.

Every `*.yaml` file in e2e/schemas/ is loaded, and each served version of each CRD in it becomes a
JSON-schema validator (the `jsonschema` package) for its `openAPIV3Schema`. What Kubernetes adds
to JSON schema is translated, or run by the validator as an extra keyword:

- strict field validation: an object that declares `properties` and neither
  `additionalProperties` nor `x-kubernetes-preserve-unknown-fields` refuses other fields;
- `x-kubernetes-int-or-string` without a type allows integers and strings;
- `x-kubernetes-list-type`: `set` items and `map` keys are unique;
- `metadata` is checked as ObjectMeta (name, namespace, labels, annotations);
- `x-kubernetes-validations`: each CEL rule runs on cel-python (`celpy`), on the value with its
  schema defaults, plus the Kubernetes CEL functions the CRDs call that celpy lacks (URLs, Go
  durations). A rule that cannot be evaluated is an error, never a pass; a rule on `oldSelf`
  only runs on updates, so it is skipped here.

    python e2e/crd_schema.py FILE|DIR...

prints `FILE: Kind/name: ok`, each error, or `not checked (no schema)` for kinds without a CRD
here (core kinds, IstioOperator), and exits 1 on any error. A directory stands for the YAML files
under it.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

import celpy
import celpy.celtypes as ct
import jsonschema
import yaml

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SCHEMA_FILES = sorted(SCHEMA_DIR.glob("*.yaml"))


class NoSchema(Exception):
    """No CRD here defines the document's kind."""


# ---------------------------------------------------------------------------------------------
# YAML as kubectl sends it


class StrictLoader(yaml.SafeLoader):
    """kubectl decodes manifests strictly: a key given twice is an error, not the last one winning."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=True) for k, _ in node.value]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", node.value[i][0].start_mark)
        return super().construct_mapping(node, deep=deep)


def load_documents(text: str) -> list:
    """The non-empty documents of a YAML text, as the JSON kubectl sends (a date is a string)."""
    docs = [d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None]
    return json.loads(json.dumps(docs, default=lambda v: v.isoformat()))


# ---------------------------------------------------------------------------------------------
# Kubernetes CEL functions that celpy lacks


def _request_uri(s) -> tuple[str, str]:
    """(scheme, the URL) if Go's url.ParseRequestURI, which the Kubernetes URL library uses,
    takes it: an absolute URL or an absolute path, a numeric port, no space in the host."""
    s = str(s)
    parts = urlsplit(s)
    if not (parts.scheme or s.startswith("/")) or " " in parts.netloc:
        raise ValueError(f'parse "{s}": invalid URI for request')
    parts.port  # raises ValueError on a port that is not a number
    return parts.scheme, s


def _is_url(s) -> ct.BoolType:
    try:
        _request_uri(s)
    except ValueError:
        return ct.BoolType(False)
    return ct.BoolType(True)


_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def _duration(s) -> ct.IntType:
    """Go's time.ParseDuration, in nanoseconds: celpy's own rounds to microseconds and accepts
    units Go refuses (`1d`). Rules only compare durations with each other, so an integer does."""
    text = str(s)
    body = text[1:] if text[:1] in ("+", "-") else text
    parts = _GO_DURATION.findall(body)
    if body != "0" and ("".join(n + u for n, u in parts) != body or not parts or any(n in ("", ".") for n, _ in parts)):
        raise ValueError(f'time: invalid duration "{text}"')
    ns = sum(Fraction(n) * _NS[u] for n, u in parts)
    return ct.IntType(int(-ns if text.startswith("-") else ns))


K8S_FUNCTIONS = {
    "isURL": _is_url,
    "url": lambda s: ct.StringType(_request_uri(s)[1]),
    "getScheme": lambda u: ct.StringType(_request_uri(u)[0]),
    "duration": _duration,
}

_CEL = celpy.Environment()
_PROGRAMS: dict[str, object] = {}


def cel_program(rule: str):
    """The compiled rule (raises celpy's CELParseError if it does not compile)."""
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _CEL.program(_CEL.compile(rule), functions=K8S_FUNCTIONS)
    return _PROGRAMS[rule]


def _error_text(e: Exception) -> str:
    # celpy wraps what a function raised as (summary, type, its arguments), and ends some
    # messages with the whole activation.
    args = e.args or (str(e),)
    detail = args[2] if len(args) > 2 and args[2] else args
    return str(detail[0]).split(" (in activation")[0]


def _cel_rules(validator, rules, instance, schema):
    # The API server runs no rule on a value of the wrong type (that error is reported already).
    if isinstance(schema.get("type"), str) and not validator.is_type(instance, schema["type"]):
        return
    if isinstance(instance, dict):
        defaults = {k: p["default"] for k, p in schema.get("properties", {}).items() if "default" in p}
        instance = {**defaults, **instance}
    for r in rules:
        if "oldSelf" in r["rule"]:
            continue
        message = r.get("message") or f"failed rule: {r['rule'].strip()}"
        try:
            result = cel_program(r["rule"]).evaluate({"self": celpy.json_to_cel(instance)})
        except Exception as e:  # celpy raises its own errors and lets the functions' through
            result = e
        if isinstance(result, Exception):
            yield jsonschema.ValidationError(f"rule could not be evaluated ({message}): {_error_text(result)}")
        elif not (isinstance(result, ct.BoolType) and result):
            yield jsonschema.ValidationError(f"fails rule: {message}")


def _list_type(validator, list_type, instance, schema):
    if list_type != "map" or not validator.is_type(instance, "array"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen = [[item.get(k) for k in keys] for item in instance if isinstance(item, dict)]
    for i, key in enumerate(seen):
        if key in seen[:i]:
            yield jsonschema.ValidationError(f"duplicate entry with {dict(zip(keys, key))}")


Validator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-validations": _cel_rules, "x-kubernetes-list-type": _list_type}
)

# ---------------------------------------------------------------------------------------------
# CRD schemas as JSON schemas

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED = rf"^({_DNS_LABEL}(\.{_DNS_LABEL})*/)?{_NAME}$"
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": f"^{_DNS_LABEL}$"},
        "labels": {
            "type": "object",
            "propertyNames": {"pattern": _QUALIFIED},
            "additionalProperties": {"type": "string", "maxLength": 63, "pattern": f"^({_NAME})?$"},
        },
        "annotations": {"type": "object", "propertyNames": {"pattern": _QUALIFIED}, "additionalProperties": {"type": "string"}},
        **{k: {"type": "string"} for k in ("generateName", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp")},
        **{k: {"type": "integer"} for k in ("generation", "deletionGracePeriodSeconds")},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        **{k: {"type": "array", "items": {"type": "object"}} for k in ("ownerReferences", "managedFields")},
    },
}


def structural(s: dict, branch: bool = False) -> dict:
    """A CRD schema node as a JSON schema. Inside oneOf/anyOf/allOf/not (`branch`) a node only
    adds constraints to the value its parent declares, so it refuses no field."""
    out = dict(s)
    if s.get("x-kubernetes-int-or-string") and "type" not in s and "anyOf" not in s:
        out["type"] = ["integer", "string"]
    if "properties" in s and "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields") and not branch:
        out["additionalProperties"] = False
    if s.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if "properties" in s:
        out["properties"] = {k: structural(v, branch) for k, v in s["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(s.get(key), dict):
            out[key] = structural(s[key], branch or key == "not")
    for key in ("oneOf", "anyOf", "allOf"):
        if key in s:
            out[key] = [structural(v, True) for v in s[key]]
    return out


class Schemas:
    """The served versions of the CRDs in `files`, each as a validator."""

    def __init__(self, files=SCHEMA_FILES):
        self.validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
        self.served: dict[str, list[str]] = {}
        self.crds: dict[str, dict] = {}
        for f in files:
            for crd in yaml.load_all(Path(f).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                if crd and crd.get("kind") == "CustomResourceDefinition":
                    self._add(crd["spec"])

    def _add(self, spec: dict) -> None:
        kind = spec["names"]["kind"]
        self.crds[kind] = spec
        for version in spec["versions"]:
            if not version.get("served"):
                continue
            api_version = f"{spec['group']}/{version['name']}"
            root = structural(version["schema"]["openAPIV3Schema"])
            meta = structural(root["properties"].get("metadata", {}), branch=True)
            root["properties"] = {
                **root["properties"],
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"allOf": [OBJECT_META, meta]},
            }
            root["required"] = ["apiVersion", "kind", "metadata", *root.get("required", [])]
            self.validators[(api_version, kind)] = Validator(root)
            self.served.setdefault(kind, []).append(api_version)

    def validate(self, doc) -> list[str]:
        """Every error of one document, each "path: problem". Raises NoSchema for a kind that no
        CRD here defines."""
        if not isinstance(doc, dict):
            return [f"document: {doc!r} is not an object"]
        kind = doc.get("kind")
        if kind not in self.served:
            raise NoSchema(kind)
        validator = self.validators.get((doc.get("apiVersion"), kind))
        if validator is None:
            return [f"apiVersion: {doc.get('apiVersion')!r} does not serve {kind}; served: {', '.join(self.served[kind])}"]
        return [f"{_path(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def _path(parts) -> str:
    out = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    return out or "document"


@functools.cache
def default_schemas() -> Schemas:
    """The CRDs in e2e/schemas/, loaded once."""
    return Schemas()


def validate(doc) -> list[str]:
    return default_schemas().validate(doc)


# ---------------------------------------------------------------------------------------------
# Files and the command line


def manifest_files(path: Path) -> list[Path]:
    path = Path(path)
    return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]


def check_file(path: Path) -> list[tuple[str, str | None, list[str] | None]]:
    """(label, kind, errors) for each document of a file; errors is None for a kind without a
    CRD here. A file that cannot be read or parsed is one entry without a kind."""
    try:
        docs = load_documents(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        return [("", None, [f"cannot read: {e}"])]
    out = []
    for i, doc in enumerate(docs, 1):
        kind = doc.get("kind") if isinstance(doc, dict) else None
        name = (doc.get("metadata") or {}).get("name") if isinstance(doc, dict) else None
        label = f"{kind}/{name}" if name else f"{kind} (document {i})"
        try:
            out.append((label, kind, validate(doc)))
        except NoSchema:
            out.append((label, kind, None))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="FILE|DIR")
    args = parser.parse_args(argv)
    totals = {"ok": 0, "unchecked": 0, "failed": 0}
    files = [f for p in args.paths for f in manifest_files(p)]
    for f in files:
        for label, _, errors in check_file(f):
            where = f"{f}: {label}: " if label else f"{f}: "
            if errors is None:
                print(f"{where}not checked (no schema)")
                totals["unchecked"] += 1
            else:
                print(*(where + e for e in errors or ["ok"]), sep="\n")
                totals["failed" if errors else "ok"] += 1
    print(f"{sum(totals.values())} documents in {len(files)} files: {totals['ok']} ok, "
          f"{totals['unchecked']} not checked (no schema), {totals['failed']} with errors")
    return 1 if totals["failed"] or not files else 0


if __name__ == "__main__":
    sys.exit(main())
