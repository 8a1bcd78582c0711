"""What every HTML page hubfleet serves is sent with: the console's (fleet side) and the course pages' (hub side)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tornado.web import RequestHandler


def set_page_headers(handler: RequestHandler, content_security_policy: str) -> None:
    """Never cached, never framed by another site, no content-type sniffing, no full URL sent to other sites; the
    page's own content security policy."""
    handler.set_header("Cache-Control", "no-store")
    handler.set_header("Content-Security-Policy", content_security_policy)
    handler.set_header("X-Frame-Options", "DENY")
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Referrer-Policy", "same-origin")
