"""An exchange-rate HTTP service in this process, as ``stream/pipelines/orders.yaml`` asks.

The orders workload's ``fx`` join calls ``GET /rates/{currency}`` and expects
``{"rate": <float>}`` (404 for a currency it does not know). The benchmark harness and the
orders integration test both serve it from here: a ``ThreadingHTTPServer`` on a free port of
127.0.0.1 that counts the requests per currency, so a caller can assert how often the
worker asked (its lookup cache should ask about once per currency).

Only the standard library and the generator's rates: the integration test imports it
without the rest of the harness' dependencies mattering.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from stream.loadgen.orders import FX_RATES


class FxService:
    """Exchange rates over HTTP on 127.0.0.1 (a free port); ``asked`` counts requests."""

    def __init__(self, rates: Mapping[str, float] | None = None) -> None:
        self.rates = dict(FX_RATES if rates is None else rates)
        self.asked: Counter[str] = Counter()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                currency = self.path.rsplit("/", 1)[-1]
                service.asked[currency] += 1
                rate = service.rates.get(currency)
                body = b"{}" if rate is None else json.dumps({"rate": rate}).encode()
                self.send_response(404 if rate is None else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The pipeline's ``http.url`` template."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/rates/{{currency}}"

    def start(self) -> FxService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def fx_service(rates: Mapping[str, float] | None = None) -> Iterator[FxService]:
    """A started :class:`FxService` (``FX_RATES`` unless ``rates``), stopped on exit."""
    service = FxService(rates).start()
    try:
        yield service
    finally:
        service.stop()
