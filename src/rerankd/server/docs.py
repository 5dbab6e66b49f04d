"""``/docs`` (Swagger UI) and ``/redoc`` served from files installed with rerankd, so the API documentation works on
an air-gapped machine: the assets come from the ``fastapi-offline`` wheel (Swagger UI 5 and Redoc, MIT/Apache-2.0),
served under ``/static/docs``, never from a CDN."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from rerankd.errors import MissingDependency

ASSETS = "/static/docs"


def install_docs(app: FastAPI) -> None:
    try:
        folder = resources.files("fastapi_offline") / "static"
    except ModuleNotFoundError:
        raise MissingDependency(
            "the API documentation assets need fastapi-offline: pip install 'rerankd[server]'"
        ) from None
    app.mount(ASSETS, StaticFiles(directory=str(folder)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
