"""`stylenet serve`: the page, the API, every refusal, the limits under load, and the page in a
real browser (headless Chromium), against servers on free loopback ports."""

import base64
import importlib.util
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from helpers import PHOTOS, bomb_png
from stylenet.runtime.cli import main
from stylenet.runtime.images import load_image
from stylenet.runtime.serve import Limits, Service
from stylenet.runtime.serve import service as service_module
from stylenet.runtime.serve.app import PAGE_FILES, STATIC
from stylenet.runtime.serve.server import in_background
from stylenet.runtime.styles import DEFAULT_STYLE
from stylenet.runtime.stylizer import Stylizer

SCREENSHOT = Path("/tmp/stylenet_serve.png")
# The displayed result's pixels: the blob: URL cannot be fetched under the page's CSP (rightly).
SHOWN = """() => {
  const image = document.getElementById("after");
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = [image.naturalWidth, image.naturalHeight];
  canvas.getContext("2d").drawImage(image, 0, 0);
  return canvas.toDataURL("image/png");
}"""
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def serving(bundled: Path):
    """A factory: a client of a real server with these limits, on a free loopback port."""
    with ExitStack() as stack:

        def make(**limits: float) -> httpx.Client:
            service = Service.load(limits=Limits(**limits), threads=1)
            url = stack.enter_context(in_background(service))
            return stack.enter_context(httpx.Client(base_url=url, timeout=60))

        yield make


@pytest.fixture
def client(serving) -> httpx.Client:
    return serving()


def jpeg(size: tuple[int, int] = (96, 64), photo: Path = PHOTOS[0]) -> bytes:
    """A real photo, shrunk (small images keep the tests fast), as JPEG bytes."""
    buffer = BytesIO()
    Image.open(photo).convert("RGB").resize(size).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def stylize(client: httpx.Client, data: bytes | None = None, **fields: str):
    """POST /api/stylize with a photo (a small real one by default) and form fields."""
    headers = {"accept": fields.pop("accept")} if "accept" in fields else {}
    files = {"image": ("photo.jpg", jpeg() if data is None else data, "image/jpeg")}
    return client.post("/api/stylize", files=files, data=fields, headers=headers)


def error(response: httpx.Response) -> tuple[int, str]:
    """(status, message) of a refusal, checking that it is JSON of the one documented shape."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    return response.status_code, body["error"]


def pixels(response: httpx.Response) -> np.ndarray:
    return np.asarray(Image.open(BytesIO(response.content)))


def test_the_page_and_its_files_come_from_the_package(client: httpx.Client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert 'accept="image/*"' in html and "capture=" in html  # a phone offers its camera
    for route, (name, media_type) in PAGE_FILES.items():
        response = client.get(route)
        assert response.status_code == 200 and response.headers["content-type"] == media_type
        assert response.content == (STATIC / name).read_bytes()
        # Works offline: nothing is loaded from elsewhere (no CDN, no web font).
        assert not re.search(
            rb"""(src|href)=["']?(https?:)?//|url\(["']?(https?:)?//""", response.content
        )
    assert client.get("/index.html").status_code == 404  # only the routes above, from a dict


def test_styles_health_and_docs(client: httpx.Client):
    listing = client.get("/api/styles").json()
    assert listing["default"] == DEFAULT_STYLE
    assert [s["name"] for s in listing["styles"]] == [DEFAULT_STYLE, "wave"]
    wave = listing["styles"][1]
    assert wave["painting"] == "Mosaic" and wave["card"][0].startswith("Mosaic, unknown")
    assert listing["limits"] == {"max_upload_mb": 25.0, "max_megapixels": 50.0}
    thumbnail = client.get(wave["thumbnail"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    image = pixels(thumbnail)
    assert image.shape == (240, 320, 3) and image.std() > 10  # a picture, not a flat colour
    assert client.get("/healthz").json() == {"status": "ok", "in_flight": 0, "capacity": 5}
    api = client.get("/openapi.json").json()
    form = api["paths"]["/api/stylize"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["properties"]["style"]["enum"] == [DEFAULT_STYLE, "wave"]
    assert client.get("/docs").status_code == 200


def test_stylize_is_the_cli_code_path(client: httpx.Client, bundled: Path):
    photo = PHOTOS[0].read_bytes()
    response = stylize(client, photo, style="wave", format="png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == 'inline; filename="photo_wave.png"'
    expected = Stylizer(bundled / "wave.onnx").stylize(load_image(PHOTOS[0]).rgb)
    np.testing.assert_array_equal(pixels(response), expected)
    default = stylize(client, photo)  # the default style, as JPEG
    assert default.headers["content-type"] == "image/jpeg"
    original = load_image(PHOTOS[0]).rgb
    assert pixels(default).shape == original.shape
    assert np.abs(pixels(default).astype(int) - original).mean() > 5


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "JPEG"),
        ({"accept": "image/png"}, "PNG"),
        ({"accept": "text/html, image/webp;q=0.9, image/png;q=0.5"}, "WEBP"),
        ({"accept": "image/png", "format": "JPG"}, "JPEG"),  # the field wins
        ({"format": "webp"}, "WEBP"),
    ],
)
def test_answer_format_by_field_or_accept(client: httpx.Client, fields: dict, expected: str):
    response = stylize(client, **fields)
    assert response.status_code == 200
    assert Image.open(BytesIO(response.content)).format == expected


def test_strength_preserve_color_max_size_and_transparency(client: httpx.Client):
    original = load_image(PHOTOS[0]).rgb
    untouched = stylize(client, PHOTOS[0].read_bytes(), strength="0", format="png")
    np.testing.assert_array_equal(pixels(untouched), original)
    small = stylize(client, PHOTOS[0].read_bytes(), max_size="120")
    assert Image.open(BytesIO(small.content)).size == (120, 80)
    plain = pixels(stylize(client, format="png"))
    kept = pixels(stylize(client, format="png", preserve_color="on"))  # as a checkbox sends it
    assert np.abs(plain.astype(int) - kept).mean() > 1
    rgba = Image.open(PHOTOS[0]).convert("RGB").resize((48, 32))
    rgba.putalpha(Image.linear_gradient("L").resize((48, 32)))
    buffer = BytesIO()
    rgba.save(buffer, "PNG")
    alpha = pixels(stylize(client, buffer.getvalue(), format="png"))[..., 3]
    np.testing.assert_array_equal(alpha, np.asarray(rgba)[..., 3])
    assert Image.open(BytesIO(stylize(client, buffer.getvalue()).content)).mode == "RGB"


def messy_uploads(tmp_path: Path) -> dict[str, bytes]:
    photo = PHOTOS[0].read_bytes()
    return {
        "empty": b"",
        "text": b"these are not the pixels you are looking for\n",
        "truncated": photo[: len(photo) // 2],
        "bomb": bomb_png(tmp_path / "bomb.png").read_bytes(),
        "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    }


BAD_UPLOADS = [
    ("empty", 400, "the image file is empty"),
    ("text", 415, "not an image, or not one of JPEG, PNG, WEBP, GIF, BMP, TIFF"),
    ("truncated", 400, "truncated or corrupt image (image file is truncated"),
    ("bomb", 413, "refused as a possible decompression bomb (Image size (400000000 pixels)"),
    ("eps", 415, "not an image, or not one of JPEG, PNG"),  # never handed to Ghostscript
]


@pytest.mark.parametrize(("kind", "status", "message"), BAD_UPLOADS)
def test_bad_files(client: httpx.Client, tmp_path: Path, kind: str, status: int, message: str):
    got_status, got = error(stylize(client, messy_uploads(tmp_path)[kind]))
    assert got_status == status and got.startswith(message), got


BAD_FIELDS = [
    ({"style": "starry"}, 404, f"unknown style 'starry'; styles: {DEFAULT_STYLE}, wave"),
    ({"style": "../wave"}, 404, f"unknown style '../wave'; styles: {DEFAULT_STYLE}, wave"),
    ({"strength": "1.5"}, 422, "strength must be in [0, 1], got '1.5'"),
    ({"strength": "-0.1"}, 422, "strength must be in [0, 1], got '-0.1'"),
    ({"strength": "lots"}, 422, "strength must be a number, got 'lots'"),
    ({"strength": "nan"}, 422, "strength must be a finite number, got 'nan'"),
    ({"preserve_color": "maybe"}, 422, "preserve_color must be true or false, got 'maybe'"),
    ({"max_size": "0"}, 422, "max_size must be a whole number >= 1, got '0'"),
    ({"max_size": "10.5"}, 422, "max_size must be a whole number >= 1, got '10.5'"),
    ({"format": "gif"}, 422, "format must be one of jpeg, png, webp, got 'gif'"),
    (
        {"accept": "image/gif"},
        406,
        "Accept: this server answers with image/jpeg, image/png, image/webp",
    ),
]


@pytest.mark.parametrize(("fields", "status", "message"), BAD_FIELDS)
def test_bad_settings(client: httpx.Client, fields: dict, status: int, message: str):
    assert error(stylize(client, **fields)) == (status, message)


def test_bad_requests(client: httpx.Client):
    photo = jpeg()
    assert error(client.post("/api/stylize", json={"image": "x"})) == (
        415,
        "send a multipart/form-data form with the photo as its image file field",
    )
    no_image = "no image file in the form (a file field named image: curl -F image=@photo.jpg)"
    assert error(client.post("/api/stylize", files={"style": (None, "wave")})) == (422, no_image)
    assert error(client.post("/api/stylize", files={"image": (None, "pixels")})) == (422, no_image)
    two = [("image", ("a.jpg", photo)), ("image", ("b.jpg", photo))]
    assert error(client.post("/api/stylize", files=two)) == (
        400,
        "malformed multipart form: Too many files. Maximum number of files is 1.",
    )
    no_boundary = {"content-type": "multipart/form-data"}
    assert error(client.post("/api/stylize", content=b"--x\r\n", headers=no_boundary)) == (
        400,
        "malformed multipart form: Missing boundary in multipart.",
    )
    assert error(client.get("/api/stylize")) == (405, "method not allowed")
    assert error(client.get("/etc/passwd")) == (404, "not found")
    assert error(client.get("/api/styles/..%2F..%2Fetc%2Fpasswd/thumbnail")) == (404, "not found")
    assert error(client.get("/api/styles/nope/thumbnail")) == (404, "unknown style 'nope'")


def test_upload_and_pixel_limits(serving):
    client = serving(max_upload_mb=0.01, max_megapixels=0.1)
    photo = PHOTOS[0].read_bytes()
    assert len(photo) > 10_000
    status, message = error(stylize(client, photo))
    assert status == 413 and re.fullmatch(r"upload of 0\.0\d+ MB: the limit is 0.01 MB", message)

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b"--x\r\nContent-Disposition: form-data; name=image; filename=a.jpg\r\n\r\n"
        yield photo

    headers = {"content-type": "multipart/form-data; boundary=x"}
    assert error(client.post("/api/stylize", content=chunked(), headers=headers)) == (
        413,
        "upload larger than the limit of 0.01 MB",
    )
    flat = BytesIO()
    Image.new("RGB", (400, 300), "orange").save(flat, "JPEG")  # 400x300 in a small file
    assert error(stylize(client, flat.getvalue())) == (
        413,
        "image of 400x300 pixels: this server takes at most 0.1 megapixels",
    )


def test_uploads_never_touch_the_disk(client: httpx.Client, monkeypatch: pytest.MonkeyPatch):
    """A 3 MB upload stays in memory (Starlette spools files over 1 MB to disk by default)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an upload was written to a temporary file")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", refuse)
    noise = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    buffer = BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    assert len(buffer.getvalue()) > 2_000_000
    assert stylize(client, buffer.getvalue(), max_size="64").status_code == 200


def test_a_busy_server_answers_503_and_finishes_what_it_accepted(
    bundled: Path, monkeypatch: pytest.MonkeyPatch
):
    """One worker, one waiting place: a third request is refused at once, inference never
    blocks the event loop, and both accepted requests are answered."""
    release = threading.Event()
    real = service_module.stylize_upload

    def held(*args: object) -> bytes:
        release.wait(30)
        return real(*args)

    monkeypatch.setattr(service_module, "stylize_upload", held)
    service = Service.load(limits=Limits(workers=1, queue=1), threads=1)
    with in_background(service) as url, httpx.Client(base_url=url, timeout=60) as http:
        try:
            with ThreadPoolExecutor(2) as pool:
                accepted = [pool.submit(stylize, http) for _ in range(2)]
                while http.get("/healthz").json()["in_flight"] < 2:
                    time.sleep(0.05)
                started = time.monotonic()
                busy = stylize(http)
                health = http.get("/healthz").json()
                assert time.monotonic() - started < 2  # the loop is free while workers work
                release.set()
                assert [f.result().status_code for f in accepted] == [200, 200]
        finally:
            release.set()
        assert error(busy) == (503, "busy: 2 requests in progress; try again in 2 s")
        assert busy.headers["retry-after"] == "2"
        assert health == {"status": "ok", "in_flight": 2, "capacity": 2}
        assert http.get("/healthz").json()["in_flight"] == 0


def test_a_slow_upload_times_out(bundled: Path):
    service = Service.load(limits=Limits(timeout=1), threads=1)
    with in_background(service) as url, httpx.Client(base_url=url) as http:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
            conn.sendall(
                b"POST /api/stylize HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n"
                b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n"
            )
            started = time.monotonic()
            reply = b""
            while not reply.endswith(b"}") and (chunk := conn.recv(4096)):
                reply += chunk
            waited = time.monotonic() - started
        head, body = reply.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 408 ") and 0.9 < waited < 10
        assert json.loads(body) == {"error": "upload not received within 1 s"}
        assert http.get("/healthz").json()["in_flight"] == 0


def test_serve_from_the_command_line(model: Path, tmp_path: Path):
    """As users run it: a models folder (one broken file skipped), the address printed, Ctrl+C
    stops it cleanly."""
    models = tmp_path / "my-styles"
    models.mkdir()
    shutil.copy(model, models / "mine.onnx")
    (models / "broken.onnx").write_text("not a model")
    command = "from stylenet.runtime.cli import main; main()"
    args = ["serve", "--port", "0", "--models", str(models), "--workers", "2", "--queue", "0"]
    server = subprocess.Popen(
        [sys.executable, "-c", command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = server.stdout.readline()
        assert first.startswith("stylenet serve: ") and "mine" in first, first
        assert "2 workers, up to 0 requests waiting" in first
        url = server.stdout.readline().split()[0]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        with httpx.Client(base_url=url, timeout=60) as http:
            assert http.get("/healthz").json()["capacity"] == 2
            assert stylize(http, style="mine").status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        stdout, stderr = server.communicate(timeout=30)
    assert server.returncode == 0 and stdout.endswith("stopped\n"), stderr
    assert f"skipped: {models / 'broken.onnx'}: not a usable ONNX model" in stderr


def test_serve_refuses_clearly(bundled: Path, monkeypatch: pytest.MonkeyPatch):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--port", str(port)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 1
    assert result.stderr == "Error: stylenet serve needs uvicorn: pip install 'stylenet[serve]'\n"


def test_the_base_install_never_imports_the_server():
    """`stylenet` (its --help and serve --help included) imports no web framework, no torch."""
    check = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from stylenet.runtime.cli import main\n"
        "for args in (['--help'], ['serve', '--help']):\n"
        "    assert CliRunner().invoke(main, args).exit_code == 0\n"
        "loaded = ('fastapi', 'starlette', 'uvicorn', 'torch')\n"
        "print(sorted(m for m in loaded if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def wait_for(page, script: str, timeout: float = 30) -> None:
    """Poll a JS function until it is true (wait_for_function evals it in the page, which the
    page's Content-Security-Policy rightly forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(script):
        assert time.monotonic() < deadline, f"timed out waiting for {script}"
        time.sleep(0.1)


def find_chromium() -> str | None:
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return next((path for name in names if (path := shutil.which(name))), None)


def test_the_page_in_a_real_browser(bundled: Path, tmp_path: Path):
    """Headless Chromium: pick a photo, pick a style, get the painted photo; a screenshot for
    a person to look at is left in /tmp/stylenet_serve.png."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium binary found (apt-get install chromium): the page is untested")
    from playwright.sync_api import sync_playwright

    service = Service.load(threads=1)
    problems: list[str] = []
    with in_background(service) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            tmp_path / "profile",
            executable_path=chromium,
            args=BROWSER_FLAGS,
            viewport={"width": 1280, "height": 860},
        )
        page = browser.new_page()
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.goto(url)
        wait_for(
            page,
            "() => [...document.querySelectorAll('.style img')]"
            ".filter(i => i.complete && i.naturalWidth === 320).length === 2",
        )
        page.set_input_files("#file", str(PHOTOS[0]))  # painted at once in the default style
        page.wait_for_selector('#compare[data-state="done"]')
        with page.expect_response(lambda r: r.url.endswith("/api/stylize")) as answer:
            page.click('.style[data-style="wave"]')
        assert answer.value.status == 200
        assert answer.value.headers["content-disposition"] == 'inline; filename="100007_wave.jpg"'
        page.wait_for_selector('#compare[data-state="done"]')
        shown = page.evaluate(SHOWN)  # the result as the page shows it, as a PNG data URL
        page.locator("#split").fill("35")
        assert "Painted in" in page.inner_text("#status")
        assert page.get_attribute("#download", "download") == "100007_wave.jpg"
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        browser.close()
    assert problems == []
    png = base64.b64decode(shown.removeprefix("data:image/png;base64,"))
    painted = np.asarray(Image.open(BytesIO(png)).convert("RGB"), dtype=int)
    original = load_image(PHOTOS[0]).rgb
    assert painted.shape == original.shape
    assert np.abs(painted - original).mean() > 5
