"""The HTTP side of `stylenet serve`: the page, its three static files, and the JSON API.

Every refusal is `{"error": "..."}` with its status. Uploads are read into memory only (never a
temporary file), counted against the upload limit as they arrive and given `Limits.timeout`
seconds in all; the page's files are read once at start-up and served from a dict, and style
names are dict keys: nothing in a request ever becomes a path.
"""

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from stylenet.runtime.serve.service import (
    FORMATS,
    Limits,
    RequestError,
    Service,
    parse_options,
)

STATIC = Path(__file__).resolve().parent / "static"
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
# The page uses nothing but its own files and the images it makes (blob: URLs).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}}


def create_app(service: Service) -> FastAPI:
    """The ASGI app serving `service`; its worker pool is shut down with the app."""

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        service.close()

    app = FastAPI(
        title="stylenet",
        summary="Paint photos in the style of a painting: POST /api/stylize.",
        lifespan=lifespan,
        redoc_url=None,
    )
    _add_error_handlers(app)
    _add_page(app)
    _add_api(app, service)
    _add_stylize(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as {"error": "..."}: ours, the framework's (404, 405) and unexpected ones."""

    def answer(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status, headers)

    @app.exception_handler(RequestError)
    async def refused(_: Request, e: RequestError) -> JSONResponse:
        return answer(e.status, e.message, e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        return answer(e.status_code, str(e.detail).lower(), e.headers)

    @app.exception_handler(ClientDisconnect)
    async def gone(_: Request, e: ClientDisconnect) -> JSONResponse:
        return answer(400, "the client disconnected during the upload")

    @app.exception_handler(Exception)
    async def crashed(_: Request, e: Exception) -> JSONResponse:
        return answer(500, f"internal error ({type(e).__name__}); see the server's log")


def _add_page(app: FastAPI) -> None:
    """The page's files, read now and served from memory."""

    def serve(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
        async def page_file() -> Response:
            return Response(body, media_type=media_type, headers=PAGE_HEADERS)

        return page_file

    for route, (name, media_type) in PAGE_FILES.items():
        body = (STATIC / name).read_bytes()
        app.add_api_route(route, serve(body, media_type), methods=["GET"], include_in_schema=False)


def _add_api(app: FastAPI, service: Service) -> None:
    """GET /healthz, /api/styles and the thumbnails."""

    @app.get("/healthz", summary="Liveness, and how busy the server is")
    async def healthz() -> dict:
        gate = service.gate
        return {"status": "ok", "in_flight": gate.in_flight, "capacity": gate.capacity}

    @app.get("/api/styles", summary="The styles, their model cards and the server's limits")
    async def styles() -> dict:
        return service.describe()

    @app.get(
        "/api/styles/{name}/thumbnail",
        summary="A drawn landscape in this style (JPEG)",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 404: _error("unknown style")},
    )
    async def thumbnail(name: str) -> Response:
        if name not in service.thumbnails:
            raise RequestError(404, f"unknown style {name!r}")
        thumbnail = service.thumbnails[name]
        return Response(thumbnail, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})


def _add_stylize(app: FastAPI, service: Service) -> None:
    """POST /api/stylize: a place in the gate first (or 503), then the upload, then a worker;
    the place is held until the worker is done, even if the client has gone."""

    @app.post(
        "/api/stylize",
        summary="Stylize a photo",
        description="The stylized image, at the photo's size (or `max_size`), as JPEG unless "
        "`format` or the Accept header asks for PNG or WebP (PNG and WebP keep transparency).",
        response_class=Response,
        openapi_extra={"requestBody": _stylize_form(service)},
        responses=_stylize_responses(),
    )
    async def stylize(request: Request) -> Response:
        with service.gate.slot() as slot:
            data, name, fields = await read_upload(request, service.limits)
            accept = request.headers.get("accept")
            options = parse_options(fields, accept, service.stylizers, service.default)
            job = service.submit(data, options)
            slot.hand_over(job)
        result = await asyncio.wrap_future(job)
        extension = "jpg" if options.format == "jpeg" else options.format
        filename = f"{_ascii(Path(name).stem) or 'photo'}_{_ascii(options.style)}.{extension}"
        headers = {
            "Content-Disposition": f'inline; filename="{filename}"',
            "X-Content-Type-Options": "nosniff",
        }
        return Response(result, media_type=FORMATS[options.format][1], headers=headers)


async def read_upload(request: Request, limits: Limits) -> tuple[bytes, str, dict[str, str]]:
    """(image bytes, its file name, the other fields) of a multipart form, held in memory.

    Refused: anything but multipart (415), a body over the limit (413, before reading when it
    says its length), one not received within the timeout (408), a malformed form (400), a form
    without an image file (422).
    """
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise RequestError(
            415, "send a multipart/form-data form with the photo as its image file field"
        )
    limit = limits.max_upload_bytes
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise RequestError(413, f"upload of {_mb(int(length))}: the limit is {_mb(limit)}")
    parser = MultiPartParser(request.headers, _bounded(request, limit), max_files=1, max_fields=16)
    parser.spool_max_size = limit + 1  # the file part stays in memory: never a temporary file
    try:
        form = await asyncio.wait_for(parser.parse(), limits.timeout)
    except asyncio.TimeoutError:
        raise RequestError(408, f"upload not received within {limits.timeout:g} s") from None
    except MultiPartException as e:
        raise RequestError(400, f"malformed multipart form: {e}") from None
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise RequestError(
            422, "no image file in the form (a file field named image: curl -F image=@photo.jpg)"
        )
    fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
    return await image.read(), image.filename or "", fields


async def _bounded(request: Request, limit: int):
    """The request's body, refused with 413 as soon as it passes `limit` bytes."""
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise RequestError(413, f"upload larger than the limit of {_mb(limit)}")
        yield chunk


def _mb(size: int) -> str:
    return f"{size / 1e6:.3g} MB"


def _ascii(name: str) -> str:
    """A file-name part safe in a header: ASCII letters, digits, _ . -"""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "-" for c in name)[:80]


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def _stylize_form(service: Service) -> dict:
    """The OpenAPI description of POST /api/stylize's form (read by hand: see read_upload)."""
    properties = {
        "image": {"type": "string", "format": "binary", "description": "The photo."},
        "style": {"type": "string", "enum": list(service.stylizers), "default": service.default},
        "strength": {"type": "number", "minimum": 0, "maximum": 1, "default": 1},
        "preserve_color": {"type": "boolean", "default": False},
        "max_size": {"type": "integer", "minimum": 1, "description": "Longest side, px."},
        "format": {"type": "string", "enum": list(FORMATS), "description": "Else by Accept."},
    }
    schema = {"type": "object", "required": ["image"], "properties": properties}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def _stylize_responses() -> dict:
    image = {"schema": {"type": "string", "format": "binary"}}
    return {
        200: {"content": {media: image for _, media in FORMATS.values()}},
        400: _error("Empty, truncated or corrupt image; malformed form"),
        404: _error("Unknown style (the message names the styles)"),
        406: _error("Accept names no format this server writes"),
        408: _error("Upload not received in time"),
        413: _error("Upload or image too large"),
        415: _error("Not a multipart form, or not an image"),
        422: _error("No image field; a setting out of range"),
        503: _error("Busy: every worker and queue place is taken (see Retry-After)"),
    }
