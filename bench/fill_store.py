#!/usr/bin/env python3
"""Bench-only: fill a stopped tokengate SQLite token store fast, or count its expired rows.

  fill_store.py DB live N      N refresh tokens + N access tokens (one of each per grant),
                               issued over the last 30 minutes, none expiring within 30 minutes
  fill_store.py DB expired N   the same, issued two days ago and expired since
  fill_store.py DB count       expired tokens left (what the janitor would purge now): one line

Rows look like the server's own (schema: src/store/migrations/sqlite/0001_tokens.sql): ids and
family ids are 16-byte UUIDv7 blobs (48-bit Unix ms first, so they are time-ordered and sort
before every token the server issues afterwards), secret_sha256 32 random bytes. The client id
is "bench-prefill", which no client has, so the rows are easy to tell apart. Only for a store
no server has open ("fill"); "count" may read a running server's store (WAL readers do not
block it). Used by bench/run.sh; see bench/README.md.
"""

import random
import sqlite3
import sys
import time

CLIENT_ID = "bench-prefill"
# The janitor deletes tokens whose expires_at is a minute in the past (src/janitor.rs).
JANITOR_SLACK_S = 60


def uuid7(ms, randbytes=random.randbytes):
    tail = bytearray(randbytes(10))
    tail[0] = 0x70 | (tail[0] & 0x0F)  # version 7
    tail[2] = 0x80 | (tail[2] & 0x3F)  # RFC 9562 variant
    return ms.to_bytes(6, "big") + bytes(tail)


def fill(path, kind, per_table):
    now = int(time.time())
    if kind == "live":
        # access tokens valid 1 h, refresh tokens 1 day: the oldest expires in 30 minutes
        start, span, access_life, refresh_life = now - 1800, 1800, 3600, 86400
    else:
        start, span, access_life, refresh_life = now - 2 * 86400, 3600, 3600, 3600
    con = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        # Only the ids are made in Python (SQLite 3.40 has no unhex()); the rest is one
        # INSERT ... SELECT per table, in id order, so every insert appends to the B-tree.
        con.create_function("bench_uuid7", 1, uuid7)
        con.create_function("bench_uuid7_like", 1, lambda b: uuid7(int.from_bytes(b[:6], "big")))
        con.execute("PRAGMA synchronous = OFF")  # bench data: a crash here just means refill
        con.execute("BEGIN IMMEDIATE")
        con.execute(
            "INSERT INTO refresh_tokens (id, secret_sha256, client_id, username, scope, family_id,"
            " issued_at, expires_at)"
            " SELECT id, randomblob(32), ?1, 'user-' || i, 'default', id, ms / 1000,"
            " ms / 1000 + ?2 FROM (SELECT i, ms, bench_uuid7(ms) AS id FROM"
            " (WITH RECURSIVE n(i) AS (SELECT 0 WHERE ?3 > 0 UNION ALL"
            " SELECT i + 1 FROM n WHERE i < ?3 - 1)"
            " SELECT i, ?4 * 1000 + i * ?5 * 1000 / ?3 AS ms FROM n))",
            (CLIENT_ID, refresh_life, per_table, start, span),
        )
        # One access token per grant, issued with its refresh token (family_id = the grant's
        # first refresh token id, as the server does).
        con.execute(
            "INSERT INTO access_tokens (id, secret_sha256, client_id, username, scope, family_id,"
            " issued_at, expires_at)"
            " SELECT bench_uuid7_like(id), randomblob(32), client_id, username, scope, id,"
            " issued_at, issued_at + ?1 FROM refresh_tokens WHERE client_id = ?2 AND"
            " issued_at BETWEEN ?3 AND ?4 ORDER BY id",
            (access_life, CLIENT_ID, start, start + span),
        )
        con.execute("COMMIT")
        # Leave no WAL behind: the server starts on a checkpointed file, as after a long run.
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def count_expired(path):
    before = int(time.time()) - JANITOR_SLACK_S
    con = sqlite3.connect(path, timeout=30)
    try:
        (n,) = con.execute(
            "SELECT (SELECT count(*) FROM access_tokens WHERE expires_at < ?1)"
            " + (SELECT count(*) FROM refresh_tokens WHERE expires_at < ?1)",
            (before,),
        ).fetchone()
    finally:
        con.close()
    return n


def main(argv):
    if len(argv) == 3 and argv[2] == "count":
        print(count_expired(argv[1]))
        return 0
    if len(argv) == 4 and argv[2] in ("live", "expired") and argv[3].isdigit():
        per_table = int(argv[3])
        started = time.monotonic()
        fill(argv[1], argv[2], per_table)
        print(f"{2 * per_table} rows in {time.monotonic() - started:.1f} s")
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
