"""A function app on HTTP streams (azurefunctions-extensions-http-fastapi), for the devhost's tests.

Its functions hold on events the tests set, so a test can tell a response that goes out
chunk by chunk (and a body that comes in piece by piece) from one held whole.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

import azure.functions as func
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, StreamingResponse

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

RELEASE_SECOND_CHUNK = threading.Event()
FIRST_PIECE_SEEN = threading.Event()
PIECE_BYTES = 1024 * 1024


@app.route(route="hold", methods=["GET"])
async def hold(req: Request) -> StreamingResponse:
    """``first`` at once, ``second`` only once the test says so."""

    def chunks() -> Iterator[bytes]:
        yield b"first"
        RELEASE_SECOND_CHUNK.wait(20)
        yield b"second"

    return StreamingResponse(chunks(), media_type="text/plain")


@app.route(route="pattern/{megabytes:int}", methods=["GET", "HEAD"])
async def pattern(req: Request) -> StreamingResponse:
    """``megabytes`` MiB of a repeating pattern, with its Content-Length unless ``?chunked``."""
    count = int(req.path_params["megabytes"])
    piece = bytes(range(256)) * (PIECE_BYTES // 256)
    headers = {} if "chunked" in req.query_params else {"Content-Length": str(count * PIECE_BYTES)}
    return StreamingResponse((piece for _ in range(count)), headers=headers, media_type="application/octet-stream")


@app.route(route="broken", methods=["GET"])
async def broken(req: Request) -> StreamingResponse:
    def chunks() -> Iterator[bytes]:
        yield b"x" * 1000
        raise RuntimeError("the source failed")

    return StreamingResponse(chunks(), headers={"Content-Length": "5000"})


@app.route(route="digest", methods=["POST", "PUT"])
async def digest(req: Request) -> JSONResponse:
    """The body's size and SHA-256, read piece by piece; says when the first piece came."""
    hasher, size, pieces = hashlib.sha256(), 0, 0
    async for piece in req.stream():
        if piece:
            FIRST_PIECE_SEEN.set()
            hasher.update(piece)
            size += len(piece)
            pieces += 1
    return JSONResponse({"size": size, "sha256": hasher.hexdigest(), "pieces": pieces,
                         "route": dict(req.path_params), "query": dict(req.query_params)})


@app.route(route="items/{item_id}", methods=["GET"])
async def item(req: Request) -> dict[str, object]:
    """Not a Response: answered as JSON, as FastAPI answers it."""
    return {"id": req.path_params["item_id"], "agent": req.headers.get("user-agent"), "method": req.method}
