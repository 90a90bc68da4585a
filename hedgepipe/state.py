"""Current state for any daemon on start: what store-writer keeps in Redis.

A restarted or late daemon does not wait for the next change of every instrument::

    from hedgepipe.state import load_state
    state = load_state(["clean.instrument", "clean.book", "md.index"], run_dir=self.run_dir)
    # {"clean.book.deribit.BTC-27DEC26-100000-C": Book(...), ...}

The Redis URL is resolved as store-writer resolves it: the ``REDIS_URL`` environment variable
when set, else the URL the caller was configured with (store-writer's ``redis_url``), else
store-writer's embedded server on ``{run_dir}/redis.sock``. A password may only come from
``REDIS_URL``; :func:`redact_url` is what goes into logs.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Callable, Iterable, Mapping

import redis
from redis.connection import parse_url

from . import messages
from .errors import ConfigError, UpstreamError
from .messages import FrameError
from .store.embedded import embedded_url
from .store.redis_state import hash_key

log = logging.getLogger("hedgepipe.state")
ENV_URL = "REDIS_URL"


def _has_password(url: str) -> bool:
    try:
        return parse_url(url).get("password") is not None
    except ValueError:
        raise ConfigError(f"redis_url {redact_url(url)!r} is not a Redis URL (redis://, rediss://, "
                          "unix://)") from None


_NETLOC_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)([^@/]*)@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any password (``user:PW@host`` or ``?password=PW``) replaced by ``***``:
    the only form of a Redis URL that is ever logged."""
    return _QUERY_PASSWORD.sub(r"\1***", _NETLOC_PASSWORD.sub(r"\1***@", url))


def resolve_url(run_dir: str, configured: str = "", environ: Mapping[str, str] | None = None
                ) -> tuple[str, bool]:
    """``(url, embedded)``: ``REDIS_URL`` > ``configured`` > ``unix://{run_dir}/redis.sock``.

    ``embedded`` is True when no URL was given (store-writer then runs the server itself).
    A configured URL carrying a password is refused: passwords come from the environment.
    """
    environ = os.environ if environ is None else environ
    if environ.get(ENV_URL):
        _has_password(environ[ENV_URL])  # a malformed REDIS_URL is refused too, redacted
        return environ[ENV_URL], False
    if configured:
        if _has_password(configured):
            raise ConfigError("redis_url carries a password: give it only in the environment, "
                              f"as {ENV_URL} (the config file and command line are logged and shared)")
        return configured, False
    if not run_dir:
        raise ConfigError("no Redis URL: set REDIS_URL, or pass run_dir for the embedded server's socket")
    return embedded_url(run_dir), True


def load_state(kinds: Iterable[str], *, run_dir: str = "", url: str = "", timeout_s: float = 2.0,
               on_problem: Callable[[str, str], None] | None = None) -> dict[str, object]:
    """``{topic: message}`` of the latest frame of every topic of the given kinds.

    A kind is the first two topic segments (``clean.book``) or ``hb``. Payloads of known kinds
    are decoded and validated into their message type; those of kinds :mod:`hedgepipe.messages`
    does not know yet come back as plain dicts. A payload that does not decode is left out and
    passed to ``on_problem(topic, detail)`` (default: logged). Raises UpstreamError when Redis
    cannot be reached, ConfigError when no URL can be resolved.
    """
    url = resolve_url(run_dir, url)[0]
    report = on_problem or (lambda topic, detail: log.warning("state value left out: %s", detail,
                                                              extra={"topic": topic}))
    kinds = list(kinds)
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                                  retry=None)
    try:
        pipe = client.pipeline(transaction=False)
        for kind in kinds:
            pipe.hgetall(hash_key(kind.encode()))
        hashes = pipe.execute()
    except redis.RedisError as exc:
        raise UpstreamError(f"state: Redis at {redact_url(url)} unreachable: {exc}") from None
    finally:
        client.close()
    state: dict[str, object] = {}
    for fields in hashes:
        for topic_b, payload in fields.items():
            topic = topic_b.decode(errors="replace")
            try:
                state[topic] = messages.decode(topic, payload)
            except FrameError as exc:
                if exc.kind != "unknown_topic":
                    report(topic, exc.detail)
                    continue
                try:  # a kind of a later issue: plain data until messages.py declares it
                    state[topic] = messages.decode_any(payload)
                except FrameError as exc2:
                    report(topic, exc2.detail)
    return state


def priming_wanted(prime: bool | str, inputs: list[str], log_to: logging.Logger) -> bool:
    """Whether a starting daemon primes itself from Redis: its ``prime_from_redis`` is true,
    false, or "auto" = unless every input is "-" (a replay or a debugging session piped in,
    whose output must depend on the stream alone)."""
    if prime == "auto" and inputs and all(endpoint == "-" for endpoint in inputs):
        log_to.info("instruments not primed from Redis: every input is a pipe (--in -), so the "
                    "output depends on the stream alone; --set prime_from_redis=true forces it")
        return False
    return bool(prime)


def stored_instruments(kinds: list[str], *, run_dir: str, url: str,
                       log_to: logging.Logger) -> list[messages.Instrument] | None:
    """The active instruments store-writer holds, or None when no store can be reached (a
    first start: logged; the daemon learns them from the stream)."""
    try:
        state = load_state(kinds, run_dir=run_dir, url=url, timeout_s=1.0)
    except (ConfigError, UpstreamError) as exc:
        log_to.info("no stored instruments; learning them from the stream", extra={"reason": str(exc)})
        return None
    return [msg for msg in state.values() if isinstance(msg, messages.Instrument) and msg.active]
