"""The OCI image through a real registry: `make oci-push` (the command users run) puts it into
Debian's docker-registry, standard clients read it back, it is what Istio's image fetcher
accepts, and Envoy runs the plugin.wasm taken from the pulled image, pinned by its SHA-256."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import pytest

import harness

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

PLUGIN_CONFIG = {"classification": {"rules": [{"class": "beta", "header": {"name": "x-beta", "exact": "true"}}]}}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Istio's acceptance logic, mirrored


def istio_extract_wasm(manifest_bytes: bytes, blob: Callable[[str], bytes]) -> bytes:
    """What Istio's agent does with a pulled image, step for step (istio/istio
    pkg/wasm/imagefetcher.go: PrepareFetch, extractDockerImage, extractOCIStandardImage,
    extractWasmPluginBinary; pkg/wasm/cache.go: isValidWasmBinary). `blob(digest)` returns a
    blob's bytes. Returns plugin.wasm, or raises AssertionError naming the rule the image breaks.

    Istio falls back to the "oci" variant (two layers, one of type
    application/vnd.module.wasm.content.layer.v1+wasm) when this fails; this image is not meant
    for that branch, so here that is a failure too."""
    manifest = json.loads(manifest_bytes)
    layers = manifest.get("layers") or []
    # Only a manifest that says it is Docker schema2 takes the Docker branch; an OCI manifest
    # (with or without a mediaType field) takes the OCI one.
    want_layer = DOCKER_LAYER if manifest.get("mediaType") == DOCKER_MANIFEST else OCI_LAYER_GZIP
    assert layers, "number of layers must be greater than zero"
    # Current Istio takes the last layer, older releases demanded exactly one layer, other
    # fetchers take the first: one layer satisfies all three.
    assert len(layers) == 1, f"number of layers must be 1 but got {len(layers)}"
    layer = layers[-1]
    assert layer["mediaType"] == want_layer, f"invalid media type {layer['mediaType']} (expect {want_layer})"
    data = blob(layer["digest"])
    try:
        tar = tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:")
    except (OSError, EOFError) as e:
        raise AssertionError(f"failed to parse layer as tar.gz: {e}") from None
    # filepath.Base(h.Name) == "plugin.wasm": the first such entry wins, at any depth.
    for member in tar:
        if os.path.basename(member.name) == "plugin.wasm":
            wasm = tar.extractfile(member).read()
            break
    else:
        raise AssertionError("plugin.wasm not found in the archive")
    assert len(wasm) >= 8 and wasm[:4] == b"\0asm", "fetched Wasm binary is invalid"
    return wasm


# ---------------------------------------------------------------------------------------------
# Fixtures


@dataclass
class Pushed:
    output: str  # what `make oci-push` printed
    built: dict[str, str]  # dist/oci.env
    repo: str  # 127.0.0.1:PORT/progressive-delivery
    tag: str
    printed_built_digest: str  # `manifest digest:` line of make oci
    printed_pushed_digest: str  # digest in the `...@sha256:` reference of make oci-push


def read_env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def printed(output: str, label: str) -> str:
    m = re.search(rf"^{re.escape(label)}:\s+(\S+)$", output, re.M)
    assert m, f"no `{label}:` line in\n{output}"
    return m.group(1)


@pytest.fixture(scope="module")
def registry():
    r = harness.Registry().start()
    yield r
    r.stop()
    harness.LOG_DIR.mkdir(exist_ok=True)
    (harness.LOG_DIR / "test_oci-registry.log").write_text(r.log())


@pytest.fixture(autouse=True)
def _registry_log_on_failure(request):
    yield
    failed = any(
        getattr(request.node, f"rep_{when}", None) is not None and getattr(request.node, f"rep_{when}").failed
        for when in ("setup", "call")
    )
    if failed and "registry" in request.fixturenames:
        log = request.getfixturevalue("registry").log()
        sys.stderr.write(f"\n===== registry log ({request.node.name}) =====\n{log[-20000:]}\n")


@pytest.fixture(scope="module")
def pushed(registry) -> Pushed:
    r = harness.run_make("oci-push", f"REGISTRY={registry.host}", "TLS_VERIFY=false")
    output = r.stdout + r.stderr
    assert r.returncode == 0, output
    built = read_env_file(harness.REPO / "dist" / "oci.env")
    ref = printed(output, "digest")
    repo, _, digest = ref.partition("@")
    return Pushed(
        output=output,
        built=built,
        repo=repo,
        tag=built["IMAGE_TAG"],
        printed_built_digest=printed(output, "manifest digest"),
        printed_pushed_digest=digest,
    )


@dataclass
class Pulled:
    layout: Path
    manifest_digest: str
    wasm: bytes


@pytest.fixture(scope="module")
def pulled(pushed, tmp_path_factory) -> Pulled:
    """The image pulled back by skopeo into a fresh OCI layout, and its plugin.wasm as Istio's
    agent would extract it."""
    layout = tmp_path_factory.mktemp("pulled") / "oci"
    r = subprocess.run(
        [
            "skopeo", "copy", "--src-tls-verify=false",
            f"docker://{pushed.repo}:{pushed.tag}", f"oci:{layout}:{pushed.tag}",
        ],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    blob = lambda d: (layout / "blobs" / "sha256" / d.removeprefix("sha256:")).read_bytes()  # noqa: E731
    wasm = istio_extract_wasm(blob(entry["digest"]), blob)
    # The README's way to get the file out for plain Envoy gives the same bytes.
    rootfs = layout.parent / "rootfs"
    r = subprocess.run(
        ["umoci", "raw", "unpack", "--rootless", "--image", f"{layout}:{pushed.tag}", str(rootfs)],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert [p.name for p in rootfs.iterdir()] == ["plugin.wasm"]
    assert (rootfs / "plugin.wasm").read_bytes() == wasm
    return Pulled(layout, entry["digest"], wasm)


# ---------------------------------------------------------------------------------------------
# The image in the registry


def test_push_prints_the_digest_the_registry_serves(pushed, registry):
    digest = pushed.built["MANIFEST_DIGEST"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), pushed.built
    assert pushed.printed_built_digest == digest, pushed.output
    assert pushed.printed_pushed_digest == digest, pushed.output
    assert pushed.repo == f"{registry.host}/progressive-delivery", pushed.output
    assert printed(pushed.output, "pushed") == f"{pushed.repo}:{pushed.tag}", pushed.output

    status, headers, body = registry.get(
        f"/v2/progressive-delivery/manifests/{pushed.tag}", {"Accept": OCI_MANIFEST}
    )
    assert status == 200, body
    assert headers["content-type"] == OCI_MANIFEST
    assert headers["docker-content-digest"] == digest
    assert "sha256:" + sha256(body) == digest
    # Byte for byte what was built: the digest a WasmPlugin pinned before the push still holds.
    assert body == (harness.REPO / pushed.built["IMAGE_LAYOUT"] / "blobs" / "sha256" / digest[7:]).read_bytes()
    # What `url: oci://...@sha256:` asks for.
    status, headers, by_digest = registry.get(f"/v2/progressive-delivery/manifests/{digest}", {"Accept": OCI_MANIFEST})
    assert (status, by_digest) == (200, body)

    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{pushed.repo}:{pushed.tag}"],
        capture_output=True, timeout=60,
    )
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == body


def test_image_is_what_istio_accepts(pushed, registry):
    """Read straight off the registry API, as Istio's agent (go-containerregistry) reads it."""
    _, headers, manifest_bytes = registry.get(
        f"/v2/progressive-delivery/manifests/{pushed.tag}", {"Accept": OCI_MANIFEST}
    )
    fetched: dict[str, bytes] = {}

    def blob(digest: str) -> bytes:
        status, _, data = registry.get(f"/v2/progressive-delivery/blobs/{digest}")
        assert status == 200, (digest, status)
        assert "sha256:" + sha256(data) == digest
        fetched[digest] = data
        return data

    wasm = istio_extract_wasm(manifest_bytes, blob)
    assert wasm == harness.WASM.read_bytes()
    assert sha256(wasm) == pushed.built["WASM_SHA256"]

    # The format chosen, exactly: an OCI image (not Docker, not the wasm artifact types) with
    # one gzip layer holding plugin.wasm at its root and nothing else.
    manifest = json.loads(manifest_bytes)
    assert headers["content-type"] == OCI_MANIFEST
    assert manifest["schemaVersion"] == 2
    assert manifest.get("mediaType", OCI_MANIFEST) == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    assert [l["mediaType"] for l in manifest["layers"]] == [OCI_LAYER_GZIP]
    layer = fetched[manifest["layers"][0]["digest"]]
    assert layer[:2] == b"\x1f\x8b", "layer is not gzip"
    tar_bytes = gzip.decompress(layer)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) - {".", "./"} == {"plugin.wasm"}, sorted(members)
        assert members["plugin.wasm"].isfile()
        assert tar.extractfile("plugin.wasm").read() == wasm

    config = json.loads(blob(manifest["config"]["digest"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + sha256(tar_bytes)]}
    assert (config["os"], config["architecture"]) == ("wasip1", "wasm")


def expected_annotations() -> dict[str, str]:
    """The annotations as the README documents them, worked out here from Cargo.toml and git."""
    package = tomllib.loads((harness.REPO / "Cargo.toml").read_text())["package"]
    git = lambda *a: subprocess.run(  # noqa: E731
        ["git", *a], cwd=harness.REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    revision = git("rev-parse", "HEAD")
    if git("status", "--porcelain"):
        revision += "-dirty"
    created = git("log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%dT%H:%M:%SZ")
    return {
        "org.opencontainers.image.source": package["repository"],
        "org.opencontainers.image.version": package["version"],
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.title": "progressive-delivery",
        "org.opencontainers.image.description": package["description"],
        "org.opencontainers.image.licenses": "Apache-2.0",
    }


def test_annotations_and_labels(pushed, registry, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    want = expected_annotations()
    assert want["org.opencontainers.image.source"] == "https://github.com/progressive-delivery/progressive-delivery"
    assert pushed.tag == want["org.opencontainers.image.version"]

    _, _, manifest_bytes = registry.get(f"/v2/progressive-delivery/manifests/{pushed.tag}", {"Accept": OCI_MANIFEST})
    manifest = json.loads(manifest_bytes)
    assert manifest["annotations"] == want
    _, _, config_bytes = registry.get(f"/v2/progressive-delivery/blobs/{manifest['config']['digest']}")
    config = json.loads(config_bytes)
    assert config["config"]["Labels"] == want
    # Every time in the image is the commit's, so rebuilding the commit gives the same digest.
    created = want["org.opencontainers.image.created"]
    assert config["created"] == created
    assert [h["created"] for h in config["history"]] == [created]
    _, _, layer = registry.get(f"/v2/progressive-delivery/blobs/{manifest['layers'][0]['digest']}")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer)), mode="r:") as tar:
        commit_time = datetime.fromisoformat(created).timestamp()
        assert {m.name: m.mtime for m in tar.getmembers()} == {".": commit_time, "plugin.wasm": commit_time}
        assert {(m.uid, m.gid, m.uname, m.gname) for m in tar.getmembers()} == {(0, 0, "", "")}


# ---------------------------------------------------------------------------------------------
# Building and pushing


def test_pulled_image_is_the_pushed_one(pulled, pushed):
    assert pulled.manifest_digest == pushed.built["MANIFEST_DIGEST"]
    assert pulled.wasm == harness.WASM.read_bytes()


def test_build_is_reproducible(tmp_path):
    """Two builds of the same wasm, copied at different times, under a different umask and time
    zone, give the same manifest digest; a different wasm gives another."""
    wasm = harness.WASM.read_bytes()

    def build(name: str, data: bytes, mtime: int, umask: str, tz: str) -> str:
        src = tmp_path / f"{name}.wasm"
        src.write_bytes(data)
        os.utime(src, (mtime, mtime))
        env = dict(os.environ, WASM=str(src), OCI_DIR=str(tmp_path / name), OCI_ENV=str(tmp_path / f"{name}.env"), TZ=tz)
        r = subprocess.run(
            ["bash", "-c", f"umask {umask} && exec oci/build.sh"],
            cwd=harness.REPO, env=env, capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return read_env_file(tmp_path / f"{name}.env")["MANIFEST_DIGEST"]

    a = build("a", wasm, 1_000_000_000, "022", "UTC")
    b = build("b", wasm, 1_700_000_000, "077", "Pacific/Auckland")
    assert a == b
    other = build("c", wasm + b"\0", 1_000_000_000, "022", "UTC")
    assert other != a


def test_oci_push_without_registry_fails_before_building():
    r = harness.run_make("oci-push", "REGISTRY=", timeout=30)
    output = r.stdout + r.stderr
    assert r.returncode != 0
    assert "oci-push needs REGISTRY=host[:port][/path]" in output, output
    assert "cargo" not in output and "umoci" not in output, output


# ---------------------------------------------------------------------------------------------
# Envoy running the module taken from the image


def remote_wasm_envoy_config(
    wasm_server: harness.Upstream,
    sha: str,
    upstreams: dict[str, harness.Upstream],
    failure_policy: str = "FAIL_CLOSED",
) -> dict:
    uri = f"http://127.0.0.1:{wasm_server.port}/plugin.wasm"
    code = harness.remote_code(uri, "wasm_server", sha, retries=1)
    return harness.bootstrap(
        http_filters=[harness.wasm_filter(PLUGIN_CONFIG, code=code, failure_policy=failure_policy), harness.ROUTER],
        routes=harness.class_routes({"beta": "canary"}, "primary"),
        clusters=[harness.static_cluster("wasm_server", wasm_server.port)]
        + [harness.static_cluster(name, up.port) for name, up in upstreams.items()],
    )


def test_envoy_runs_the_wasm_from_the_pulled_image(pulled, pushed, envoy, upstream, primary_and_canary):
    """plugin.wasm out of the pulled image, served over HTTP, loaded by Envoy's `remote` data
    source pinned to the sha256 `make oci` printed."""
    wasm_server = upstream("wasm-server", harness.fixed(200, pulled.wasm, [("content-type", "application/wasm")]))
    sha = printed(pushed.output, "plugin.wasm sha256")
    e = envoy(remote_wasm_envoy_config(wasm_server, sha, primary_and_canary))

    assert e.request("GET", "/", [("x-beta", "true")]).json() == {
        "upstream": "canary", "method": "GET", "path": "/", "x-user-class": "beta", "x-features": None,
    }
    assert e.request("GET", "/").json()["x-user-class"] == "stable"
    assert [r.header("x-user-class") for r in primary_and_canary["canary"].take()] == ["beta"]
    assert [(r.method, r.path) for r in wasm_server.take()] == [("GET", "/plugin.wasm")]
    harness.wait_for_log(e, "wasm log progressive-delivery progressive-delivery: configured: 1 rules")


@pytest.mark.parametrize("policy", ["FAIL_CLOSED", "FAIL_RELOAD", "FAIL_OPEN"])
def test_envoy_refuses_the_wasm_when_the_sha256_differs(pulled, pushed, envoy, upstream, primary_and_canary, policy):
    """A wrong pin is not a startup error: Envoy starts without the plugin. What requests get
    then is the failure policy's (the README says which)."""
    wasm_server = upstream("wasm-server", harness.fixed(200, pulled.wasm))
    sha = printed(pushed.output, "plugin.wasm sha256")
    wrong = sha[:-1] + ("0" if sha[-1] != "0" else "1")
    cfg = remote_wasm_envoy_config(wasm_server, wrong, primary_and_canary, failure_policy=policy)
    e = envoy(cfg, component_log_level="config:debug")

    uri = f"http://127.0.0.1:{wasm_server.port}/plugin.wasm"
    # The bytes arrived (the fetch succeeded) and were refused for their digest, on every try.
    harness.wait_for_log(e, "Plugin progressive-delivery failed to load")
    log = e.log()
    assert log.count(f"fetch remote data [uri = {uri}]: data is invalid") == 2, log
    assert len(wasm_server.take()) == 2
    assert "configured: 1 rules" not in log

    r = e.request("GET", "/", [("x-beta", "true")])
    received = primary_and_canary["primary"].take() + primary_and_canary["canary"].take()
    if policy == "FAIL_OPEN":
        # Through, but unclassified: the route for beta was not taken.
        assert (r.status, r.json()["upstream"], r.json()["x-user-class"]) == (200, "primary", None)
        assert len(received) == 1
    else:
        assert r.status == 503
        assert received == []


def test_istio_manifests_are_pinned_to_the_pushed_image(pushed, registry):
    """`make istio-manifests` points every WasmPlugin at the image in the registry by its
    manifest digest (url and sha256), the one the registry serves, and changes nothing else."""
    import istio_model as im

    r = harness.run_make("istio-manifests", f"REGISTRY={registry.host}")
    assert r.returncode == 0, r.stdout + r.stderr
    _, headers, _ = registry.get(f"/v2/progressive-delivery/manifests/{pushed.tag}", {"Accept": OCI_MANIFEST})
    served = headers["docker-content-digest"]
    pinned_root = harness.REPO / "dist" / "istio"
    source = {p.relative_to(im.ISTIO_DIR): d for p, d in im.documents()}
    pinned = {p.relative_to(pinned_root): d for p, d in im.documents(pinned_root)}
    assert pinned.keys() == source.keys()
    plugins = 0
    for rel, doc in pinned.items():
        if doc["kind"] == "WasmPlugin":
            plugins += 1
            url, sha = doc["spec"].pop("url"), doc["spec"].pop("sha256")
            assert (url, sha) == (f"oci://{pushed.repo}@{served}", served.removeprefix("sha256:")), rel
            status, _, _ = registry.get(f"/v2/progressive-delivery/manifests/{served}", {"Accept": OCI_MANIFEST})
            assert status == 200
            src = source[rel]
            assert src["spec"].pop("url").startswith("oci://registry.example.com/") and src["spec"].pop("sha256") == ""
        assert doc == source[rel], rel
    assert plugins == 4
    # The pinned copies are still valid WasmPlugins (sha256 pattern, url CEL rule).
    from test_crd_schema import assert_manifests_valid

    assert_manifests_valid(pinned_root)
