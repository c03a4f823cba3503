#!/usr/bin/env python3
"""A small OTLP/HTTP (protobuf) trace receiver for the secref tests.

Decodes `POST /v1/traces` bodies (gzip or not) with the official OTLP proto
definitions (the `opentelemetry-proto` package) and appends one JSON line per
span to --spans: name, kind, attributes, resource attributes, status. Every
raw (decompressed) body is also appended to --raw, so tests can grep the
exact bytes the exporter sent for a canary.

    otlp_receiver.py --port 4318 --spans spans.jsonl --raw spans.bin
"""

import argparse
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

LOCK = threading.Lock()


def value(v):
    """An AnyValue as plain JSON."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attrs(v.kvlist_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding", "") == "gzip":
            body = gzip.decompress(body)
        req = ExportTraceServiceRequest()
        try:
            req.ParseFromString(body)
        except Exception:  # a malformed body is the exporter's bug: say so
            self.send_error(400)
            return
        # Only this header is kept: tests set it through
        # OTEL_EXPORTER_OTLP_HEADERS to see the variable honoured.
        marker = self.headers.get("x-secref-test")
        lines = []
        for rs in req.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    lines.append(json.dumps({
                        "service_name": resource.get("service.name"),
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "attributes": attrs(span.attributes),
                        "resource": resource,
                        "scope": ss.scope.name,
                        "x_secref_test": marker,
                        "status": {"code": span.status.code, "message": span.status.message},
                    }))
        with LOCK:
            with open(self.server.raw, "ab") as f:
                f.write(body)
            with open(self.server.spans, "a") as f:
                for line in lines:
                    f.write(line + "\n")
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--spans", required=True)
    p.add_argument("--raw", required=True)
    a = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.spans, server.raw = a.spans, a.raw
    server.serve_forever()


if __name__ == "__main__":
    main()
