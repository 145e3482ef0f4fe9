"""The operator dashboard: server-rendered HTML on --http-listen, served on the loop."""

from dispatchd.web.app import Dashboard, Hooks
from dispatchd.web.errors import WebError
from dispatchd.web.server import WebServer
from dispatchd.web.trends import Trend, Trends

__all__ = ["Dashboard", "Hooks", "Trend", "Trends", "WebError", "WebServer"]
