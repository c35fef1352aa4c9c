"""/docs works offline: the page references nothing on another host, its assets are served by the
app itself, and the API reports the package's one version."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

import memsvc


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_reference_no_other_host_and_their_assets_load(live_server: str) -> None:
    page = httpx.get(f"{live_server}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "://" not in page.text, "an absolute URL: the page would need another host"
    parser = _Refs()
    parser.feed(page.text)
    assert len(parser.refs) == 3  # the script, the stylesheet, the icon
    loaded = {}
    for ref in parser.refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        asset = httpx.get(live_server + ref)
        assert asset.status_code == 200, ref
        loaded[ref.rsplit(".", 1)[-1]] = asset
    assert loaded["js"].headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in loaded["js"].text and len(loaded["js"].content) > 500_000
    assert (
        loaded["css"].headers["content-type"].startswith("text/css") and ".swagger-ui" in loaded["css"].text
    )
    assert loaded["png"].content.startswith(b"\x89PNG")
    # The page asks for the app's own OpenAPI document, which Swagger UI 5 renders (3.1).
    spec_url = re.search(r"url: '([^']+)'", page.text)
    assert spec_url and spec_url.group(1) == "/openapi.json"
    spec = httpx.get(live_server + spec_url.group(1)).json()
    assert spec["openapi"].startswith("3.1") and spec["info"]["version"] == memsvc.__version__
    # ReDoc would load its script from a CDN: not served.
    assert httpx.get(f"{live_server}/redoc").status_code == 404


@pytest.mark.slow
def test_docs_render_in_chromium_with_no_other_host(live_server: str, tmp_path: Path) -> None:
    """Swagger UI renders every operation of the app's OpenAPI 3.1 document in headless Chromium,
    and no request leaves for another host (they are refused, so a CDN would show a blank page)."""
    binary = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    if binary is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    own_host = urlsplit(live_server).netloc
    elsewhere: list[str] = []

    def only_this_server(route: Any) -> None:
        if urlsplit(route.request.url).netloc == own_host:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.route("**/*", only_this_server)
        page.goto(f"{live_server}/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        operations = page.locator(".opblock").count()
        title = page.locator(".info .title").inner_text()
        page.screenshot(path=str(tmp_path / "docs.png"))
        browser.close()
    assert elsewhere == [] and errors == []
    assert operations >= 20 and "memsvc" in title and memsvc.__version__ in title
