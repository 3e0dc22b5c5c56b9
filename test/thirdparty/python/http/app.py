"""A small CPython wasi:http handler for the third-party trials (the wasi:http/proxy world, built
with componentize-py). The same routes as the JavaScript handler (test/thirdparty/js/handler.js),
so one table of expected responses serves both: / greets, /echo returns the body, /headers
reflects a request header, /sum adds query numbers, anything else is 404.

It uses the wasi:http types directly, with blocking stream calls: one request at a time per
instance, which is what the proxy world gives a handler anyway.
"""

from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Post,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

LANGUAGE = "CPython"
# wasi:io output streams take at most 4096 bytes per blocking write.
CHUNK = 4096


def read_body(request: IncomingRequest) -> bytes:
    body = request.consume()
    data = b""
    with body.stream() as stream:
        while True:
            try:
                data += stream.blocking_read(65536)
            except Err as e:
                if isinstance(e.value, StreamError_Closed):
                    break
                raise
    body.__exit__(None, None, None)
    return data


def respond(out: ResponseOutparam, status: int, body: bytes, headers: list) -> None:
    response = OutgoingResponse(Fields.from_list(headers))
    response.set_status_code(status)
    outgoing = response.body()
    ResponseOutparam.set(out, Ok(response))
    with outgoing.write() as stream:
        for i in range(0, len(body), CHUNK):
            stream.blocking_write_and_flush(body[i : i + CHUNK])
    OutgoingBody.finish(outgoing, None)


def text(out: ResponseOutparam, body: str, status: int = 200, extra: list = ()) -> None:
    respond(out, status, body.encode(), [("content-type", b"text/plain"), *extra])


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        url = urlsplit(request.path_with_query() or "/")
        method = request.method()
        if url.path == "/":
            print(f"request {type(method).__name__.removeprefix('Method_').upper()} /")
            text(response_out, f"hello from {LANGUAGE} wasi:http\n")
        elif url.path == "/echo" and isinstance(method, Method_Post):
            body = read_body(request)
            respond(
                response_out,
                200,
                body,
                [("content-type", b"application/octet-stream"), ("x-echo-length", str(len(body)).encode())],
            )
        elif url.path == "/headers":
            values = request.headers().get("x-test")
            value = values[0].decode() if values else "(none)"
            text(response_out, f"x-test: {value}\n", 203, [("x-reflected", value.encode())])
        elif url.path == "/sum":
            numbers = [int(n) if n.lstrip("-").isdigit() else float(n) for n in parse_qs(url.query).get("n", [])]
            total = sum(numbers)
            text(response_out, f"{'+'.join(str(n) for n in numbers)}={total}\n")
        else:
            text(response_out, f"not found: {url.path}\n", 404)
