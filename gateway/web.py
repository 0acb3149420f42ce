"""What the API serves besides its endpoints: the OpenAPI pages from files shipped in the package
(no CDN: plants are often air-gapped), security headers, and CORS only when configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Awaitable, Callable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # The documentation pages run one inline script (their set-up); nothing loads from elsewhere.
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
                               "frame-ancestors 'none'",
}


def serve_documentation(api: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, from gateway/static (vendored, with their licences)."""
    api.mount("/static", StaticFiles(directory=STATIC), name="static")

    @api.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="pm-gateway API", oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/swagger-ui/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
        )

    @api.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @api.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="pm-gateway API",
                              redoc_js_url="/static/redoc/redoc.standalone.js",
                              redoc_favicon_url="/static/swagger-ui/favicon-32x32.png", with_google_fonts=False)


def secure_headers(api: FastAPI, cors_origins: list[str]) -> None:
    @api.middleware("http")
    async def add_headers(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    if cors_origins:  # closed unless configured: no Access-Control-* headers at all
        api.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "PUT", "DELETE"], allow_headers=["Authorization",
                                                                                           "Content-Type"])
