"""Running the app: uvicorn on a socket bound before start-up, so that a port in use is one clear
line and `--port 0` can print the port it got."""

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn

from stylenet.runtime.serve.app import create_app
from stylenet.runtime.serve.service import Service

# Connections beyond the requests the gate admits: the page, its thumbnails, health checks.
SPARE_CONNECTIONS = 64


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one); OSError says why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def build_server(service: Service) -> uvicorn.Server:
    """uvicorn serving `service`: idle keep-alive connections closed after 5 s, at most
    `SPARE_CONNECTIONS` more connections than the gate's capacity (uvicorn answers the rest 503),
    logging warnings and errors only."""
    config = uvicorn.Config(
        create_app(service),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=5,
        limit_concurrency=service.gate.capacity + SPARE_CONNECTIONS,
    )
    return uvicorn.Server(config)


def address(sock: socket.socket) -> str:
    """The page's address for a listening socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(service: Service, sock: socket.socket, echo: Callable[[str], None] = print) -> None:
    """Serve until Ctrl+C (or SIGTERM); requests in progress are finished first."""
    echo(f"{address(sock)}  (Ctrl+C to stop)")
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl+C after shutting down
        build_server(service).run(sockets=[sock])
    echo("stopped")


@contextlib.contextmanager
def in_background(service: Service) -> Iterator[str]:
    """`service` on uvicorn on a free loopback port, in a thread, for as long as the block runs:
    its address (the tests and docs/screenshot.py drive it)."""
    sock = listen("127.0.0.1", 0)
    server = build_server(service)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("the server did not start")
    try:
        yield address(sock)
    finally:
        server.should_exit = True
        thread.join(30)
