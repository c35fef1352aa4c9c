"""/docs works offline: the page references nothing on another host, its assets are served by the
app itself, and the API reports the package's one version."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx

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
