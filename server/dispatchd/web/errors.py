"""The dashboard's one root exception."""

from __future__ import annotations


class WebError(Exception):
    """A request the dashboard refuses; ``status`` is the HTTP status to answer with and
    the message is shown to the operator as text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
