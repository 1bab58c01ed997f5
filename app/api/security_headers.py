"""Headers every response carries, and a strict Content-Security-Policy on the UI's pages.

The policy allows scripts, styles and requests from this origin only, and no inline script or style at all:
even if model output ever reached a page as markup, the browser would not run it. (The pages never put it
there: templates autoescape, and the scripts write text with textContent.) Swagger UI (/docs) loads its
assets from a CDN and runs an inline script, so it gets the headers but not the policy.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
NO_POLICY = ("/docs",)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        strict = not scope["path"].startswith(NO_POLICY)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(ALWAYS)
                content_type = dict(headers).get(b"content-type", b"")
                if strict and content_type.startswith(b"text/html"):
                    headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
