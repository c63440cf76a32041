"""Durable state: SQLite (WAL) by default, behind small per-service interfaces."""
