"""The exceptions a route raises to answer with an error (see app.py's handlers)."""

from __future__ import annotations


class ApiError(Exception):
    """An OpenAI-style error answer: status, one-sentence message, and the offending parameter."""

    def __init__(self, status: int, message: str, param: str | None = None, type_: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers
        self.type = type_ or ("server_error" if status >= 500 else "invalid_request_error")


class ClientGone(Exception):
    """The client hung up (mid-upload or mid-answer): nothing to answer, nothing to log but a line."""
