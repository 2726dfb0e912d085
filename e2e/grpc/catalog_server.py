"""A real gRPC server for the e2e tests: `shop.v1.Catalog` (shop/v1/catalog.proto beside this
file) and the standard `grpc.health.v1.Health`, served by grpcio on a free 127.0.0.1 port in
the test's own process.

The Python stubs are generated from the proto at test time (`generate_stubs`, grpcio-tools'
protoc) into a directory the caller gives, a temporary one, so nothing generated is committed
or can go stale against the proto.

Variants, chosen per server:
- `same`: the reference answers, a pure function of the request;
- `changed-field`: the same, but every product's price (field 3) is one higher, the kind of
  change a body comparison must find;
- `unavailable`: every Catalog call fails with UNAVAILABLE (an HTTP 200 whose grpc-status is
  14), and the health check says NOT_SERVING.

Every call is recorded (`calls`), so a test asserts on what each server received, not only on
what the client saw; every answer carries the trailer `x-served-by: NAME`.
"""

from __future__ import annotations

import importlib
import sys
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

HERE = Path(__file__).resolve().parent
PROTO = HERE / "shop" / "v1" / "catalog.proto"
VARIANTS = ("same", "changed-field", "unavailable")
SERVICE = "shop.v1.Catalog"


@dataclass
class Stubs:
    pb2: ModuleType
    pb2_grpc: ModuleType


def generate_stubs(out_dir: Path) -> Stubs:
    """Runs protoc (grpcio-tools) on catalog.proto into `out_dir` and imports the result. The
    generated modules import each other as `shop.v1.…`, so `out_dir` goes on sys.path."""
    import grpc_tools
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{HERE}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    if str(out_dir) not in sys.path:
        sys.path.insert(0, str(out_dir))
    importlib.invalidate_caches()
    return Stubs(importlib.import_module("shop.v1.catalog_pb2"), importlib.import_module("shop.v1.catalog_pb2_grpc"))


@dataclass
class Call:
    """One call as a server received it: the full method name, the request metadata and every
    request message (one for all but UploadPrices)."""

    method: str
    metadata: dict[str, str]
    requests: list = field(default_factory=list)


class CatalogServer:
    """`CatalogServer(name, variant, stubs).start()`; `port`, `calls`, `stop()`."""

    def __init__(self, name: str, variant: str, stubs: Stubs):
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
        self.name = name
        self.variant = variant
        self.stubs = stubs
        self.calls: list[Call] = []
        self.port = 0
        self._lock = threading.Lock()
        self._orders = 0
        self._server: grpc.Server | None = None

    def start(self) -> "CatalogServer":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.stubs.pb2_grpc.add_CatalogServicer_to_server(_Catalog(self), server)
        checker = health.HealthServicer()
        status = health_pb2.HealthCheckResponse.NOT_SERVING if self.variant == "unavailable" else health_pb2.HealthCheckResponse.SERVING
        for service in ("", SERVICE):
            checker.set(service, status)
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def _record(self, method: str, context: grpc.ServicerContext, requests: list) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        with self._lock:
            self.calls.append(Call(f"/{SERVICE}/{method}", metadata, requests))

    def _next_order(self) -> int:
        with self._lock:
            self._orders += 1
            return self._orders

    # The reference answers, pure functions of the request.
    def product(self, product_id: int):
        pb2 = self.stubs.pb2
        price = 9.5 + product_id + (1.0 if self.variant == "changed-field" else 0.0)
        return pb2.Product(
            id=product_id,
            name=f"Product {product_id}",
            price=price,
            tags=["catalog", f"p{product_id}"],
            stock_by_warehouse=[3, 0, product_id],
            dimensions=pb2.Dimensions(width_mm=100, height_mm=20 + product_id),
        )

    def price_update(self, product_id: int, sequence: int):
        return self.stubs.pb2.PriceUpdate(product_id=product_id, price=self.product(product_id).price + sequence, sequence=sequence)


class _Catalog:
    """The servicer: records, then answers per the server's variant."""

    def __init__(self, server: CatalogServer):
        self.s = server

    def _answer(self, context: grpc.ServicerContext) -> None:
        context.set_trailing_metadata((("x-served-by", self.s.name),))
        if self.s.variant == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.s.name} catalog is unavailable")

    def GetProduct(self, request, context):
        self.s._record("GetProduct", context, [request])
        self._answer(context)
        return self.s.product(request.id)

    def ListProducts(self, request, context):
        self.s._record("ListProducts", context, [request])
        self._answer(context)
        size = max(0, min(request.page_size, 10))
        return self.s.stubs.pb2.ListProductsResponse(products=[self.s.product(i) for i in range(1, size + 1)])

    def WatchPrices(self, request, context):
        self.s._record("WatchPrices", context, [request])
        self._answer(context)
        for sequence in range(max(0, min(request.count, 100))):
            yield self.s.price_update(request.product_id, sequence)

    def UploadPrices(self, request_iterator, context):
        requests = list(request_iterator)
        self.s._record("UploadPrices", context, requests)
        self._answer(context)
        return self.s.stubs.pb2.UploadSummary(received=len(requests))

    def PlaceOrder(self, request, context):
        self.s._record("PlaceOrder", context, [request])
        self._answer(context)
        return self.s.stubs.pb2.Order(order_id=self.s._next_order(), product_id=request.product_id, quantity=request.quantity)
