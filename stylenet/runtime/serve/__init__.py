"""`stylenet serve`: a web page and an HTTP API over the runtime (the [serve] extra: FastAPI,
uvicorn, python-multipart). Only `stylenet serve` imports it; the base install never does.

`service` holds the styles, limits and worker pool; `app` the routes; `server` runs uvicorn.
"""

from stylenet.runtime.serve.app import create_app
from stylenet.runtime.serve.server import build_server, listen, run
from stylenet.runtime.serve.service import Limits, Service

__all__ = ["Limits", "Service", "build_server", "create_app", "listen", "run"]
