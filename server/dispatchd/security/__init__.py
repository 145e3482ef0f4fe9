"""Transport security and access control: TLS credentials, bearer tokens by role, and the
server interceptor that checks them. Nothing here runs unless the config asks for it."""

from dispatchd.security.errors import SecurityError, TLSFilesError, TokenFileError
from dispatchd.security.interceptor import AuthInterceptor, AuthStats
from dispatchd.security.policy import (
    OPEN_METHODS,
    RULES,
    SUBMITTER_HEADER,
    Rule,
    rule_for,
)
from dispatchd.security.tls import server_credentials
from dispatchd.security.tokens import Identity, Role, TokenTable, load_tokens, parse_tokens

__all__ = [
    "OPEN_METHODS",
    "RULES",
    "SUBMITTER_HEADER",
    "AuthInterceptor",
    "AuthStats",
    "Identity",
    "Role",
    "Rule",
    "SecurityError",
    "TLSFilesError",
    "TokenFileError",
    "TokenTable",
    "load_tokens",
    "parse_tokens",
    "rule_for",
    "server_credentials",
]
