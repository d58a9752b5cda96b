"""The console's static files, and the security policy that admits exactly them.

The stylesheet and the script are files of this package's ``static`` folder
(``console.css``, ``console.js``; shipped as package data) and are read once, when
this module is imported. The script is served at ``/console.js`` (:func:`serve_script`),
never inlined, so the policy can forbid inline script; the stylesheet is inlined as
every page's one ``<style>`` element (:data:`STYLE`), which the policy admits by its
hash alone. :data:`SECURITY_HEADERS` go on every console response.

>>> CONTENT_SECURITY_POLICY.split("; ")[:2]
["default-src 'none'", "script-src 'self'"]
>>> f"style-src '{_csp_hash(STYLE)}'" in CONTENT_SECURITY_POLICY
True
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from http import HTTPStatus
from importlib import resources
from typing import Final

from daemon.web.messages import Request, Response

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SCRIPT",
    "SECURITY_HEADERS",
    "STYLE",
    "serve_script",
    "static_text",
]


def static_text(name: str) -> str:
    """The text of the file ``name`` in this package's ``static`` folder."""
    return resources.files(__package__ or "daemon.web").joinpath("static").joinpath(name).read_text("utf-8")


#: The text of every page's one ``<style>`` element (the policy carries its hash).
STYLE: Final = "\n" + static_text("console.css")
#: The pages' one script, served at /console.js.
SCRIPT: Final = static_text("console.js")

_JS: Final = "text/javascript; charset=utf-8"


def _csp_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


#: The console's Content-Security-Policy: its own script, its own hashed stylesheet, fetch to itself.
CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        f"style-src '{_csp_hash(STYLE)}'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

#: Headers on every console response.
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def serve_script(request: Request) -> Response:
    """``GET /console.js``: the script, revalidated rather than never stored."""
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return Response(HTTPStatus.OK, SCRIPT.encode("utf-8"), _JS, headers)
