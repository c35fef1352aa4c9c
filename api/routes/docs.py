"""/docs: the interactive API documentation (Swagger UI) with its assets shipped in the package,
so it works offline and loads nothing from another host.

`api/static/swagger-ui/` holds swagger-ui-bundle.js and swagger-ui.css of swagger-ui-dist 5.35.0
(npm; Apache-2.0, its LICENSE and NOTICE beside them). To update: `npm pack swagger-ui-dist@5` and
copy the same files.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = Path(__file__).resolve().parent.parent / "static" / "swagger-ui"
FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}

router = APIRouter(tags=["docs"], include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} {request.app.version} API",
        swagger_js_url=f"{root}/docs/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/favicon-32x32.png",
        # No badge fetched from the public validator: nothing leaves the machine.
        swagger_ui_parameters={"validatorUrl": None},
    )


def _serve(name: str, media_type: str) -> None:
    path = ASSETS / name

    def asset() -> FileResponse:
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})

    asset.__name__ = f"docs_{path.stem.replace('-', '_')}"
    router.add_api_route(f"/docs/{name}", asset, methods=["GET"], response_class=FileResponse)


for _name, _media_type in FILES.items():
    _serve(_name, _media_type)
