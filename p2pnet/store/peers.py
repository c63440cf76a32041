# -*- test-case-name: test.interop.test_store_peers -*-
"""The RustDesk peer registry on disk: SQLite in the data directory (C{peers.sqlite3}).

The table has the columns and indexes of hbbs's C{db_v2.sqlite3} C{peer} table (spec
rustdesk.md §4.14), so an hbbs database imports row for row (L{importHbbs}). Every query is a
function of a cursor, used both by L{PeerStore} (off the reactor thread, Deferreds)
and by the C{p2pnet peers} command (synchronously).
"""

from __future__ import annotations

import json
import sqlite3
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from p2pnet.codecs.addrmangle import unmapV4
from p2pnet.store.sqlite import Database, connect

__all__ = ["FILENAME", "IPeerStore", "PeerRecord", "PeerStore", "SCHEMA", "importHbbs", "listPeers",
           "readHbbs",
           "selectPeer", "upsertPeer", "countPeers"]

#: The registry's file name inside the data directory.
FILENAME = "peers.sqlite3"

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS peer (
        guid BLOB PRIMARY KEY NOT NULL,
        id VARCHAR(100) NOT NULL,
        uuid BLOB NOT NULL,
        pk BLOB NOT NULL,
        created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
        user BLOB,
        status TINYINT,
        note VARCHAR(300),
        info TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX IF NOT EXISTS index_peer_id ON peer (id)",
    "CREATE INDEX IF NOT EXISTS index_peer_user ON peer (user)",
    "CREATE INDEX IF NOT EXISTS index_peer_created_at ON peer (created_at)",
    "CREATE INDEX IF NOT EXISTS index_peer_status ON peer (status)",
)


@dataclass(frozen=True)
class PeerRecord:
    """One registered peer as stored.

    @ivar ip: the address the peer last registered its key from (hbbs's C{info.ip}).
    """

    id: str
    uuid: bytes
    pk: bytes
    ip: str
    createdAt: str = ""


def _ipFromInfo(info: str | None) -> str:
    """hbbs's C{info.ip}, with a v4-mapped address (dual-stack hbbs) written as IPv4."""
    try:
        value = json.loads(info or "{}").get("ip", "")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(value, str):
        return ""
    try:
        return unmapV4(value)
    except ValueError:
        return value


def _record(row: tuple[Any, ...]) -> PeerRecord:
    peerId, uuid, pk, info, created = row
    return PeerRecord(str(peerId), bytes(uuid or b""), bytes(pk or b""), _ipFromInfo(info),
                      str(created or ""))


_COLUMNS = "id, uuid, pk, info, created_at"


def selectPeer(cursor: Any, peerId: str) -> PeerRecord | None:
    """The peer with id C{peerId}, or C{None}."""
    cursor.execute(f"SELECT {_COLUMNS} FROM peer WHERE id = ?", (peerId,))
    row = cursor.fetchone()
    return _record(row) if row else None


def upsertPeer(cursor: Any, record: PeerRecord) -> None:
    """Insert C{record}, or update the stored peer with its id (uuid included)."""
    info = json.dumps({"ip": record.ip})
    cursor.execute(
        "UPDATE peer SET uuid = ?, pk = ?, info = ? WHERE id = ?",
        (record.uuid, record.pk, info, record.id),
    )
    if cursor.rowcount == 0:
        cursor.execute(
            "INSERT INTO peer (guid, id, uuid, pk, info) VALUES (?, ?, ?, ?, ?)",
            (uuidlib.uuid4().bytes, record.id, record.uuid, record.pk, info),
        )


def listPeers(cursor: Any, limit: int = 100, offset: int = 0) -> list[PeerRecord]:
    """Peers ordered by id."""
    cursor.execute(
        f"SELECT {_COLUMNS} FROM peer ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
    )
    return [_record(row) for row in cursor.fetchall()]


def countPeers(cursor: Any) -> int:
    """How many peers are stored."""
    cursor.execute("SELECT COUNT(*) FROM peer")
    return int(cursor.fetchone()[0])


def readHbbs(hbbsPath: str) -> list[PeerRecord]:
    """The peers of an hbbs C{db_v2.sqlite3}, opened read-only.

    @raise sqlite3.Error: the file is not an hbbs database.
    """
    source = sqlite3.connect(f"file:{hbbsPath}?mode=ro", uri=True)
    try:
        rows = source.execute("SELECT id, uuid, pk, created_at, info FROM peer").fetchall()
    finally:
        source.close()
    return [PeerRecord(str(peerId), bytes(uuid or b""), bytes(pk or b""), _ipFromInfo(info),
                       str(created or "")) for peerId, uuid, pk, created, info in rows]


def importHbbs(cursor: Any, hbbsPath: str) -> int:
    """Copy every peer of an hbbs C{db_v2.sqlite3} not already here; return how many.

    The hbbs file is opened read-only; peers whose id is already registered here are
    kept as they are.

    @raise sqlite3.Error: the file is not an hbbs database.
    """
    source = sqlite3.connect(f"file:{hbbsPath}?mode=ro", uri=True)
    try:
        rows = source.execute(
            "SELECT guid, id, uuid, pk, created_at, user, status, note, info FROM peer"
        ).fetchall()
    finally:
        source.close()
    added = 0
    for row in rows:
        cursor.execute(
            "INSERT OR IGNORE INTO peer "
            "(guid, id, uuid, pk, created_at, user, status, note, info) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, COALESCE(?, '{}'))",
            row,
        )
        added += max(cursor.rowcount, 0)
    return added


def openSync(path: str) -> sqlite3.Connection:
    """A synchronous connection with the schema in place (for the command line)."""
    return connect(path, SCHEMA)


class IPeerStore(Protocol):
    """What the rendezvous service needs of a durable peer registry.

    L{PeerStore} (SQLite) implements it; a networked one (Redis) will, and test fakes
    are checked against it by mypy.
    """

    def get(self, peerId: str) -> Deferred[PeerRecord | None]:
        """The stored peer with id C{peerId}, or C{None}."""

    def put(self, record: PeerRecord) -> Deferred[None]:
        """Insert or update C{record}; fires once it is durable."""

    def close(self) -> None:
        """Release the store's resources (threads, connections)."""


class PeerStore:
    """The registry as Deferreds; every write is committed before its Deferred fires.

    Implements L{IPeerStore}.
    """

    def __init__(self, path: str, key: str = "data-dir") -> None:
        self._db = Database(path, SCHEMA, key)

    def get(self, peerId: str) -> Deferred[PeerRecord | None]:
        """The stored peer with id C{peerId}, or C{None}."""
        return self._db.runInteraction(selectPeer, peerId)

    def put(self, record: PeerRecord) -> Deferred[None]:
        """Insert or update C{record}; fires once it is durable."""
        return self._db.runInteraction(upsertPeer, record)

    def list(self, limit: int = 100, offset: int = 0) -> Deferred[list[PeerRecord]]:
        """Peers ordered by id."""
        return self._db.runInteraction(listPeers, limit, offset)

    def count(self) -> Deferred[int]:
        """How many peers are stored."""
        return self._db.runInteraction(countPeers)

    def importHbbs(self, hbbsPath: str) -> Deferred[int]:
        """Import an hbbs C{db_v2.sqlite3}; fires with the number of peers added."""
        return self._db.runInteraction(importHbbs, hbbsPath)

    def close(self) -> None:
        """Stop the database thread."""
        self._db.close()
