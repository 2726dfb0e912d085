"""gRPC through a real Envoy running the filter. A gRPC call is mirrored only when
`mirror.grpc.methods` declares its method and it is one request (unary or server-streaming);
the canary's answer is compared on its grpc-status and, with `compare.body: protobuf`, field by
field. Whatever the filter does, the client gets the primary's answer and trailers intact.

The servers are real grpcio servers of e2e/grpc/shop/v1/catalog.proto (e2e/grpc/catalog_server.py),
whose stubs are generated at test time into a temporary directory. Upstream clusters speak
HTTP/2 (`http2_protocol_options`), as gRPC needs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

import harness

MIRROR_TOTAL = "progressive_delivery_mirror_total"
COMPARISONS = "progressive_delivery_comparisons_total"
DIFFERENCES = "progressive_delivery_differences_total"
LOG_PREFIX = "wasm log progressive-delivery progressive-delivery"


def _load_catalog_server():
    # By file, not by name: e2e/grpc is not a package, and putting it on sys.path would make
    # its directory shadow the `grpc` library.
    path = Path(__file__).resolve().parent / "grpc" / "catalog_server.py"
    spec = importlib.util.spec_from_file_location("catalog_server", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["catalog_server"] = module
    spec.loader.exec_module(module)
    return module


catalog_server = _load_catalog_server()


@pytest.fixture(scope="session")
def stubs(tmp_path_factory):
    return catalog_server.generate_stubs(tmp_path_factory.mktemp("grpc-stubs"))


@pytest.fixture
def catalog(stubs):
    """`catalog(name, variant)` starts a CatalogServer; all are stopped after the test."""
    started = []

    def make(name: str, variant: str = "same"):
        server = catalog_server.CatalogServer(name, variant, stubs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def channel(port: int) -> grpc.Channel:
    # No proxy from the environment: the test talks to 127.0.0.1 only.
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])


def h2_cluster(cluster: dict) -> dict:
    cluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    return cluster


def grpc_envoy_config(plugin_config: dict, primary: int, canary: int) -> dict:
    """The filter mirroring to `canary`, every route to `primary`; both clusters HTTP/2."""
    cfg = harness.mirroring_envoy_config(plugin_config, primary, canary)
    for cluster in cfg["static_resources"]["clusters"]:
        h2_cluster(cluster)
    return cfg


# A mirror section without `grpc`: no gRPC call is declared, so none is mirrored.
PLUGIN_CONFIG = {
    "classification": {"rules": [{"class": "beta", "header": {"name": "x-beta", "exact": "true"}}]},
    "mirror": {"cluster": "canary"},
}


def test_proto_declares_what_may_be_mirrored(stubs):
    """The contract the feature builds on: which methods the proto marks as safe."""
    options = stubs.pb2.DESCRIPTOR.services_by_name["Catalog"].methods_by_name
    level = descriptor_pb2.MethodOptions
    got = {name: m.GetOptions().idempotency_level for name, m in options.items()}
    assert got == {
        "GetProduct": level.NO_SIDE_EFFECTS,
        "ListProducts": level.NO_SIDE_EFFECTS,
        "WatchPrices": level.NO_SIDE_EFFECTS,
        "UploadPrices": level.IDEMPOTENCY_UNKNOWN,
        "PlaceOrder": level.IDEMPOTENCY_UNKNOWN,
    }
    streaming = {name: (m.client_streaming, m.server_streaming) for name, m in options.items()}
    assert streaming == {
        "GetProduct": (False, False),
        "ListProducts": (False, False),
        "WatchPrices": (False, True),
        "UploadPrices": (True, False),
        "PlaceOrder": (False, False),
    }
    # The wire shapes the schema-less comparison reads: field 5 packed (one length-delimited
    # field, tag 0x2a), field 6 a nested message (tag 0x32).
    wire = stubs.pb2.Product(id=1, stock_by_warehouse=[3, 0, 1], dimensions=stubs.pb2.Dimensions(width_mm=1)).SerializeToString()
    assert wire == bytes([0x08, 0x01, 0x2A, 0x03, 0x03, 0x00, 0x01, 0x32, 0x02, 0x08, 0x01])


@pytest.mark.parametrize("variant", ["same", "changed-field", "unavailable"])
def test_catalog_server_variants(catalog, stubs, variant):
    """Each variant answers as documented, straight from the server (no Envoy)."""
    reference = catalog("reference", "same")
    server = catalog("under-test", variant)
    with channel(server.port) as ch:
        stub = stubs.pb2_grpc.CatalogStub(ch)
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="shop.v1.Catalog"), timeout=10)
        if variant == "unavailable":
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as err:
                stub.GetProduct(stubs.pb2.GetProductRequest(id=7), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert err.value.details() == "under-test catalog is unavailable"
            assert ("x-served-by", "under-test") in err.value.trailing_metadata()
        else:
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            product, call = stub.GetProduct.with_call(stubs.pb2.GetProductRequest(id=7), timeout=10)
            assert call.code() == grpc.StatusCode.OK
            assert ("x-served-by", "under-test") in call.trailing_metadata()
            want = reference.product(7)
            if variant == "changed-field":
                assert product.price == want.price + 1.0
                want.price = product.price
            assert product == want
            prices = list(stub.WatchPrices(stubs.pb2.WatchPricesRequest(product_id=7, count=4), timeout=10))
            assert [p.sequence for p in prices] == [0, 1, 2, 3]
            upload = stub.UploadPrices(iter([stubs.pb2.PriceUpdate(product_id=1)] * 3), timeout=10)
            assert upload.received == 3
            orders = [stub.PlaceOrder(stubs.pb2.PlaceOrderRequest(product_id=7, quantity=1), timeout=10).order_id for _ in range(2)]
            assert orders == [1, 2]
    methods = [c.method for c in server.calls]
    if variant == "unavailable":
        assert methods == ["/shop.v1.Catalog/GetProduct"]
    else:
        assert methods == [
            "/shop.v1.Catalog/GetProduct",
            "/shop.v1.Catalog/WatchPrices",
            "/shop.v1.Catalog/UploadPrices",
            "/shop.v1.Catalog/PlaceOrder",
            "/shop.v1.Catalog/PlaceOrder",
        ]
        assert len(server.calls_to("/shop.v1.Catalog/UploadPrices")[0].requests) == 3
    assert reference.calls == []


@pytest.mark.parametrize("primary_variant", ["same", "unavailable"])
def test_grpc_passes_through_the_filter_unmirrored(catalog, envoy, stubs, primary_variant):
    """Without `mirror.grpc`: answers and trailers reach the client as the primary sent them,
    including an error status sent trailers-only, nothing reaches the canary, and each call
    counts `grpc_not_declared`."""
    primary = catalog("primary", primary_variant)
    canary = catalog("canary", "changed-field")
    e = envoy(grpc_envoy_config(PLUGIN_CONFIG, primary.port, canary.port))
    pb2 = stubs.pb2
    sent = 0
    with channel(e.listener_port) as ch:
        stub = stubs.pb2_grpc.CatalogStub(ch)
        calls = {
            "GetProduct": lambda: stub.GetProduct.with_call(pb2.GetProductRequest(id=3), timeout=10),
            "ListProducts": lambda: stub.ListProducts.with_call(pb2.ListProductsRequest(page_size=3), timeout=10),
            "UploadPrices": lambda: stub.UploadPrices.with_call(iter([pb2.PriceUpdate(product_id=3, sequence=i) for i in range(3)]), timeout=10),
            "PlaceOrder": lambda: stub.PlaceOrder.with_call(pb2.PlaceOrderRequest(product_id=3, quantity=2), timeout=10),
        }
        answers = {}
        for name, invoke in calls.items():
            sent += 1
            if primary_variant == "unavailable":
                with pytest.raises(grpc.RpcError) as err:
                    invoke()
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, name
                assert err.value.details() == "primary catalog is unavailable", name
                assert ("x-served-by", "primary") in err.value.trailing_metadata(), name
            else:
                answer, call = invoke()
                assert call.code() == grpc.StatusCode.OK, name
                assert ("x-served-by", "primary") in call.trailing_metadata(), name
                answers[name] = answer
        stream = stub.WatchPrices(pb2.WatchPricesRequest(product_id=3, count=5), timeout=10)
        sent += 1
        if primary_variant == "unavailable":
            with pytest.raises(grpc.RpcError) as err:
                list(stream)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        else:
            assert list(stream) == [primary.price_update(3, i) for i in range(5)]
            assert stream.code() == grpc.StatusCode.OK
            assert ("x-served-by", "primary") in stream.trailing_metadata()
            assert answers["GetProduct"] == primary.product(3)
            assert answers["ListProducts"] == pb2.ListProductsResponse(products=[primary.product(i) for i in (1, 2, 3)])
            assert answers["UploadPrices"].received == 3
            assert answers["PlaceOrder"].order_id == 1
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="shop.v1.Catalog"), timeout=10)
        sent += 1
        want_health = health_pb2.HealthCheckResponse.NOT_SERVING if primary_variant == "unavailable" else health_pb2.HealthCheckResponse.SERVING
        assert health.status == want_health

    assert [c.method for c in primary.calls] == [
        "/shop.v1.Catalog/GetProduct",
        "/shop.v1.Catalog/ListProducts",
        "/shop.v1.Catalog/UploadPrices",
        "/shop.v1.Catalog/PlaceOrder",
        "/shop.v1.Catalog/WatchPrices",
    ]
    # The filter classified the calls on their way (its header reached the server).
    assert all(c.metadata.get("x-user-class") == "stable" for c in primary.calls), [c.metadata for c in primary.calls]
    try:
        harness.wait_until(lambda: harness.counts_by(e, MIRROR_TOTAL, "decision") == {"grpc_not_declared": sent}, 10, what=f"{sent} grpc_not_declared decisions")
    except AssertionError as err:
        raise AssertionError(f"{err}: got {harness.counts_by(e, MIRROR_TOTAL, 'decision')}") from None
    assert canary.calls == []
    assert harness.counts_by(e, COMPARISONS, "result") == {}


GET_PRODUCT = "/shop.v1.Catalog/GetProduct"
WATCH_PRICES = "/shop.v1.Catalog/WatchPrices"
UPLOAD_PRICES = "/shop.v1.Catalog/UploadPrices"
PLACE_ORDER = "/shop.v1.Catalog/PlaceOrder"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"

# The documented example, plus UploadPrices declared by mistake: a client stream is still
# never mirrored.
DECLARING_CONFIG = {
    "classification": {"rules": [{"class": "beta", "header": {"name": "x-beta", "exact": "true"}}]},
    "mirror": {
        "cluster": "canary",
        "grpc": {"methods": ["/shop.v1.Catalog/Get*", "/shop.v1.Catalog/ListProducts", WATCH_PRICES, UPLOAD_PRICES, HEALTH_CHECK]},
        "compare": {"body": "protobuf"},
    },
}


def difference_series(e) -> dict[tuple[str, str, str], float]:
    return {
        (labels["endpoint"], labels["element"], labels["kind"]): v
        for labels, v in harness.prometheus_samples(e.prometheus(), DIFFERENCES)
        if v
    }


def wait_for_results(e, want: dict[str, float]) -> None:
    try:
        harness.wait_until(lambda: harness.counts_by(e, COMPARISONS, "result") == want, 10, what=f"comparison results {want}")
    except AssertionError as err:
        raise AssertionError(f"{err}: got {harness.counts_by(e, COMPARISONS, 'result')}\n{e.log()[-3000:]}") from None


# canary variant -> (result of a GetProduct, its differing element, what the log line says)
UNARY_CASES = {
    "same": ("match", None, None),
    "changed-field": ("body_mismatch", "/3", "body /3: 12.5 vs 13.5"),
    "unavailable": ("status_mismatch", "grpc-status", 'grpc-status OK (0) vs UNAVAILABLE (14), grpc-message "" vs "canary catalog is unavailable"'),
}


@pytest.mark.parametrize("canary_variant", list(UNARY_CASES))
def test_a_declared_unary_call_is_mirrored_and_compared(catalog, envoy, stubs, canary_variant):
    """GetProduct (declared by `Get*`) reaches the canary as the same call, with te: trailers
    and a grpc-timeout within timeout_ms; the verdict follows the canary's variant, and the
    client gets the primary's answer and trailers whatever the canary did."""
    result, element, detail = UNARY_CASES[canary_variant]
    primary = catalog("primary", "same")
    canary = catalog("canary", canary_variant)
    e = envoy(grpc_envoy_config(DECLARING_CONFIG, primary.port, canary.port))
    with channel(e.listener_port) as ch:
        stub = stubs.pb2_grpc.CatalogStub(ch)
        product, call = stub.GetProduct.with_call(stubs.pb2.GetProductRequest(id=3), timeout=10, metadata=[("x-beta", "true")])
    assert call.code() == grpc.StatusCode.OK
    assert product == primary.product(3)
    assert ("x-served-by", "primary") in call.trailing_metadata()

    wait_for_results(e, {result: 1})
    assert harness.counts_by(e, MIRROR_TOTAL, "decision") == {"mirrored": 1}
    [copy] = canary.calls
    assert copy.method == GET_PRODUCT
    assert copy.requests == [stubs.pb2.GetProductRequest(id=3)]
    assert copy.metadata.get("x-mirror") == "1"
    assert copy.metadata.get("x-user-class") == "beta"
    # The canary's grpcio server enforces te: trailers; its deadline came from grpc-timeout.
    assert [c.method for c in primary.calls] == [GET_PRODUCT]
    if element is None:
        assert difference_series(e) == {}
        return
    assert difference_series(e) == {(GET_PRODUCT, element, "mismatch"): 1}
    line = harness.wait_for_log(e, LOG_PREFIX, "mirror mismatch")
    assert f"POST {GET_PRODUCT} class=beta endpoint={GET_PRODUCT} element={element} result={result}: {detail}" in line, line


@pytest.mark.parametrize("canary_variant", ["same", "changed-field"])
def test_a_declared_server_stream_is_mirrored_and_compared(catalog, envoy, stubs, canary_variant):
    """WatchPrices sends one request and streams its answer: mirrored, compared message by
    message; the client gets the whole stream from the primary."""
    primary = catalog("primary", "same")
    canary = catalog("canary", canary_variant)
    e = envoy(grpc_envoy_config(DECLARING_CONFIG, primary.port, canary.port))
    with channel(e.listener_port) as ch:
        stream = stubs.pb2_grpc.CatalogStub(ch).WatchPrices(stubs.pb2.WatchPricesRequest(product_id=3, count=4), timeout=10)
        assert list(stream) == [primary.price_update(3, i) for i in range(4)]
        assert stream.code() == grpc.StatusCode.OK
        assert ("x-served-by", "primary") in stream.trailing_metadata()
    if canary_variant == "same":
        wait_for_results(e, {"match": 1})
        assert difference_series(e) == {}
    else:
        wait_for_results(e, {"body_mismatch": 1})
        # PriceUpdate.price is field 2; every message of the stream differs there, each one
        # element of the same series.
        assert difference_series(e) == {(WATCH_PRICES, "/2", "mismatch"): 4}
        line = harness.wait_for_log(e, LOG_PREFIX, "mirror mismatch")
        assert f"endpoint={WATCH_PRICES} element=/2 result=body_mismatch: body message 0 /2: 12.5 vs 13.5" in line, line
    assert [c.method for c in canary.calls] == [WATCH_PRICES]


def test_what_is_not_mirrored(catalog, envoy, stubs):
    """An undeclared method never reaches the canary (grpc_not_declared); a client stream is
    not one request, declared or not (not_idempotent); a declared health check is mirrored.
    Every client gets the primary's answer and trailers."""
    primary = catalog("primary", "same")
    canary = catalog("canary", "same")
    e = envoy(grpc_envoy_config(DECLARING_CONFIG, primary.port, canary.port))
    pb2 = stubs.pb2
    with channel(e.listener_port) as ch:
        stub = stubs.pb2_grpc.CatalogStub(ch)
        order, call = stub.PlaceOrder.with_call(pb2.PlaceOrderRequest(product_id=3, quantity=2), timeout=10)
        assert (order.order_id, call.code()) == (1, grpc.StatusCode.OK)
        assert ("x-served-by", "primary") in call.trailing_metadata()
        upload, call = stub.UploadPrices.with_call(iter([pb2.PriceUpdate(product_id=3, sequence=i) for i in range(3)]), timeout=10)
        assert (upload.received, call.code()) == (3, grpc.StatusCode.OK)
        assert ("x-served-by", "primary") in call.trailing_metadata()
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="shop.v1.Catalog"), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    harness.wait_until(
        lambda: harness.counts_by(e, MIRROR_TOTAL, "decision") == {"grpc_not_declared": 1, "not_idempotent": 1, "mirrored": 1},
        10,
        what="one decision of each kind",
    )
    wait_for_results(e, {"match": 1})
    assert [c.method for c in primary.calls] == [PLACE_ORDER, UPLOAD_PRICES]
    assert canary.calls == [], "only the health check reached the canary, which records Catalog calls only"
