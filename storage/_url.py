"""Storage URLs: which one to use, and how to show it without its password."""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_URL = "sqlite:///sweeps.db"
ENV_VAR = "SWEEPS_STORAGE"
SUPPORTED = ("sqlite", "postgresql", "redis", "rediss")  # redis: `storage.redis_journal`


class StorageURLError(ValueError):
    """A storage URL that cannot be used; the message never contains its password."""


PROXY_SCHEME = "grpc://"  # a `sweeps storage-proxy`, for workers (`storage.remote`)
PROXY_TOKEN_ENV = "SWEEPS_PROXY_TOKEN"  # the token it requires on every call


def resolve_url(given: str | None = None, *, proxy: bool = False) -> str:
    """The storage URL to use: ``given`` (``--storage``), else ``$SWEEPS_STORAGE``, else the
    embedded SQLite default. Plain ``postgresql://`` means the psycopg 3 driver;
    ``redis://`` (``rediss://`` with TLS) keeps the study in Redis. With
    ``proxy`` (a worker), ``grpc://HOST:PORT`` names a storage proxy.

    Raises:
        StorageURLError: the URL is malformed or names an unsupported database.
    """
    url = given or os.environ.get(ENV_VAR) or DEFAULT_URL
    if url.startswith(PROXY_SCHEME):
        if not proxy:
            raise StorageURLError(
                f"storage: {url} is a storage proxy, which serves workers only; give this "
                "command the database URL (sqlite:///FILE, postgresql+psycopg://... or "
                "redis://...)"
            )
        proxy_address(url)
        return url
    parsed = _parse(url)
    if parsed.get_backend_name() not in SUPPORTED:
        raise StorageURLError(
            f"storage: unsupported database {parsed.get_backend_name()!r} in "
            f"{mask_url(url)}; use sqlite:///FILE, postgresql+psycopg://USER@HOST/DB or "
            "redis://HOST:PORT/DB"
        )
    if parsed.get_backend_name() in ("redis", "rediss"):
        _check_redis(url, parsed)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() in ("sqlite", "postgresql"):
        _check_driver(url, parsed)
    return parsed.render_as_string(hide_password=False)


def _check_driver(url: str, parsed: URL) -> None:
    """Refuse a driver SQLAlchemy does not know or cannot import (``postgresql+nosuch``)."""
    try:
        parsed.get_dialect().import_dbapi()
    except (ArgumentError, ImportError):  # NoSuchModuleError is an ArgumentError
        raise StorageURLError(
            f"storage: no driver {parsed.get_driver_name()!r} for "
            f"{parsed.get_backend_name()} in {mask_url(url)}; use sqlite:///FILE or "
            "postgresql+psycopg://USER@HOST/DB"
        ) from None


def _check_redis(url: str, parsed: URL) -> None:
    """Refuse what redis-py would reject with a traceback, or read as another database."""
    from redis.connection import parse_url  # imported for Redis URLs only

    use = "use redis://HOST:PORT/DB (or rediss:// with TLS; DB a number)"
    if not is_redis(url) or not (parsed.database or "0").isdigit():
        raise StorageURLError(f"storage: {mask_url(url)}: {use}")
    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as e:
        raise StorageURLError(f"storage: {mask_url(url)}: {e}; {use}") from None


def is_redis(url: str) -> bool:
    """Whether ``url`` names a Redis server (`storage.redis_journal`)."""
    return url.startswith(("redis://", "rediss://"))


def proxy_address(url: str) -> tuple[str, int]:
    """``grpc://HOST:PORT`` -> (HOST, PORT).

    Raises:
        StorageURLError: not such a URL.
    """
    rest = url.removeprefix(PROXY_SCHEME)
    host, _, port = rest.rpartition(":")
    valid_host = host and not any(c in host for c in "@/ ")  # no credentials, no path
    if rest == url or not valid_host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StorageURLError(
            f"storage: {url!r} is not a storage proxy URL; use grpc://HOST:PORT "
            "(the address of a 'sweeps storage-proxy', port 1-65535)"
        )
    return host, int(port)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (unparseable URLs are hidden whole)."""
    if url.startswith(PROXY_SCHEME):
        return url  # a proxy's address holds no credentials
    try:
        return _parse(url).render_as_string(hide_password=True)
    except StorageURLError:
        return "<unparseable storage URL>"


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise StorageURLError(
            "storage: not a database URL; use sqlite:///FILE, "
            "postgresql+psycopg://USER@HOST/DB or redis://HOST:PORT/DB"
        ) from None
