"""/ui: the web console, static files shipped in the package (`api/static/ui`), no build step.

The page talks only to the public REST API, with the API key the user types in; nothing here
reads tenant data. A strict Content-Security-Policy keeps memory contents from ever running as code.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

ASSETS = Path(__file__).resolve().parent.parent / "static" / "ui"
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["console"], include_in_schema=False)


def _serve(path: Path) -> None:
    """One route per shipped file: nothing else under /ui is reachable. The page itself is at
    /ui (it loads `ui/<asset>` and calls `v1/...` relative to that, so a path prefix works)."""
    route = "/ui" if path.name == "index.html" else f"/ui/{path.name}"
    media_type = _MEDIA_TYPES[path.suffix]

    def asset() -> FileResponse:
        return FileResponse(path, media_type=media_type, headers=_HEADERS)

    asset.__name__ = f"console_{path.stem}_{path.suffix[1:]}"
    router.add_api_route(route, asset, methods=["GET"], response_class=FileResponse)


for _path in sorted(ASSETS.iterdir()):
    if _path.suffix in _MEDIA_TYPES:
        _serve(_path)
