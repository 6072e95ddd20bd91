"""Running the app: uvicorn on a socket bound before start-up, so that a port in use is one clear
line and `--port 0` can print the port it got."""

import contextlib
import socket
from collections.abc import Callable

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
