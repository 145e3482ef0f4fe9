"""The security package's error family: each one stops the server from starting."""

from __future__ import annotations


class SecurityError(Exception):
    """Root of the security package's errors. The message names the file and what to fix."""


class TokenFileError(SecurityError):
    """The --auth-tokens file cannot be read or has a bad line."""


class TLSFilesError(SecurityError):
    """A --tls-* file cannot be read or is not PEM."""
