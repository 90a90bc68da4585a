"""Errors that end a process, and the one place that maps them to exit codes.

Input problems never end a daemon (they are counted and logged); these are for what a
process cannot run without: its configuration, its endpoints.
"""

from __future__ import annotations

# sysexits.h values, so supervisord logs and shell scripts can tell causes apart.
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_CONFIG = 78


class HedgepipeError(Exception):
    exit_code = EX_SOFTWARE


class ConfigError(HedgepipeError):
    """Bad or missing configuration: a typo'd key, a wrong type, a bad endpoint."""

    exit_code = EX_CONFIG


class EndpointError(HedgepipeError):
    """An endpoint could not be bound or connected (address in use, permission)."""

    exit_code = EX_UNAVAILABLE


class UpstreamError(HedgepipeError):
    """A service the command needs is not there (supervisord not running, ...)."""

    exit_code = EX_UNAVAILABLE


class DataError(HedgepipeError):
    """An input file is not what the command reads (a chain file with a bad row)."""

    exit_code = EX_DATAERR


class InputMissing(HedgepipeError):
    """An input file given on the command line cannot be opened."""

    exit_code = EX_NOINPUT


class StorageError(HedgepipeError):
    """A directory or file the process must write cannot be created (journal directory)."""

    exit_code = EX_CANTCREAT


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, HedgepipeError):
        return exc.exit_code
    if isinstance(exc, PermissionError):
        return EX_CONFIG
    if isinstance(exc, OSError):
        return EX_UNAVAILABLE
    return EX_SOFTWARE
