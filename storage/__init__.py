"""Where studies live: storage URLs, database engines, and (later) curve tables and artifacts.

url = storage.resolve_url(args.storage)     # --storage, else $SWEEPS_STORAGE, else SQLite
print(storage.mask_url(url))                # passwords never reach any output
engine = storage.create_engine(url)         # SQLite in WAL mode; PostgreSQL with pre-ping
"""

from storage._engine import create_engine
from storage._url import DEFAULT_URL, ENV_VAR, StorageURLError, mask_url, resolve_url

__all__ = ["DEFAULT_URL", "ENV_VAR", "StorageURLError", "create_engine", "mask_url", "resolve_url"]
