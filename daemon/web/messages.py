"""HTTP messages as the daemon's handlers see them: a :class:`Request` in, a :class:`Response` out.

A handler (:data:`Handler`) is a plain function of a request; it answers an
error on purpose by raising :class:`HttpError`, which :class:`daemon.web.http.HttpServer`
turns into the JSON error every route shares (:meth:`Response.error`). Nothing
here touches a socket, so handlers can be tested on these objects alone.

>>> Response.error(404, "no route for /x").body
b'{"error": "no route for /x", "status": 404}'
>>> Request("GET", "/review", query={"offset": ["20"]}).query_value("offset")
'20'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Self

__all__ = ["Handler", "HttpError", "Request", "Response"]

_JSON: Final = "application/json"
_TEXT: Final = "text/plain; charset=utf-8"


class HttpError(Exception):
    """Raised by a handler to answer with an error status and a JSON message."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Request:
    """One HTTP request as a handler sees it.

    ``headers`` has lower-case names; ``query`` maps each parameter to all its values;
    ``path_params`` holds the segments matched by ``{name}`` in the route.
    """

    method: str
    path: str
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    path_params: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header's value by case-insensitive name."""
        return self.headers.get(name.lower(), default)

    def query_value(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            HttpError: 400 when the body is empty or not valid JSON.
        """
        if not self.body:
            raise HttpError(HTTPStatus.BAD_REQUEST, "a JSON body is required")
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {error}") from None


@dataclass(frozen=True)
class Response:
    """What a handler returns; ``Content-Length`` is added when it is sent."""

    status: int = HTTPStatus.OK
    body: bytes = b""
    content_type: str = _TEXT
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def text(
        cls, text: str, *, status: int = HTTPStatus.OK, headers: Mapping[str, str] | None = None
    ) -> Self:
        """A UTF-8 plain-text response."""
        return cls(int(status), text.encode("utf-8"), _TEXT, dict(headers or {}))

    @classmethod
    def json(
        cls, data: Any, *, status: int = HTTPStatus.OK, headers: Mapping[str, str] | None = None
    ) -> Self:
        """A JSON response (NaN and infinity are refused: they are not JSON)."""
        body = json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
        return cls(int(status), body, _JSON, dict(headers or {}))

    @classmethod
    def error(cls, status: int, message: str, *, headers: Mapping[str, str] | None = None) -> Self:
        """The JSON error every route answers with: ``{"error": message, "status": status}``."""
        return cls.json({"error": message, "status": int(status)}, status=status, headers=headers)


#: A route's handler.
Handler = Callable[[Request], Response]
