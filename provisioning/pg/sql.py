"""Quoting names for SQL text, where a bind parameter cannot stand (identifiers in DDL)."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """`name` as a double-quoted identifier, inner quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def quote_table(name: str) -> str:
    """A schema-qualified `schema.table` name, each part quoted."""
    schema, _, table = name.partition(".")
    return f"{quote_ident(schema)}.{quote_ident(table)}"
