"""What a source database holds: tables, their columns in COPY order, keys and foreign keys."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg


@dataclass(frozen=True, kw_only=True)
class Column:
    name: str
    type: str  # format_type(), e.g. "character varying(160)"
    nullable: bool
    unique: bool  # alone, the whole of a primary key or unique constraint

    @property
    def is_text(self) -> bool:
        return self.type.startswith(("text", "character", "json", "citext", "xml"))


@dataclass(frozen=True, kw_only=True)
class ForeignKey:
    """`table(columns)` references `parent(parent_columns)`."""

    table: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    declared: bool = True


@dataclass(frozen=True, kw_only=True)
class Table:
    name: str  # schema-qualified, e.g. "public.invoice"
    columns: tuple[Column, ...]  # in attribute order, as pg_dump's COPY lists them
    primary_key: tuple[str, ...]

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def position(self, name: str) -> int:
        return next(i for i, c in enumerate(self.columns) if c.name == name)


@dataclass(frozen=True, kw_only=True)
class Catalog:
    tables: dict[str, Table]
    foreign_keys: tuple[ForeignKey, ...] = field(default=())

    def parents_of(self, table: str) -> list[ForeignKey]:
        return [fk for fk in self.foreign_keys if fk.table == table]


_TABLES = """
select c.oid, n.nspname || '.' || c.relname as name
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname not like 'pg\\_%' and not c.relispartition
order by 2
"""
_COLUMNS = """
select a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod) as type,
       not a.attnotnull as nullable
from pg_attribute a
where a.attrelid = any($1::oid[]) and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
order by a.attrelid, a.attnum
"""
_CONSTRAINTS = """
select con.conrelid, con.contype::text as contype, con.confrelid,
       array(select a.attname from unnest(con.conkey) with ordinality k(n, i)
             join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.n
             order by k.i) as cols,
       array(select a.attname from unnest(con.confkey) with ordinality k(n, i)
             join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.n
             order by k.i) as refcols
from pg_constraint con
where con.conrelid = any($1::oid[]) and con.contype in ('p', 'u', 'f')
"""


async def read_catalog(conn: asyncpg.Connection) -> Catalog:
    """Read the user tables of the database `conn` is connected to."""
    tables = await conn.fetch(_TABLES)
    oids = [t["oid"] for t in tables]
    names = {t["oid"]: t["name"] for t in tables}
    columns: dict[int, list[asyncpg.Record]] = {oid: [] for oid in oids}
    for row in await conn.fetch(_COLUMNS, oids):
        columns[row["attrelid"]].append(row)
    primary: dict[int, tuple[str, ...]] = {}
    unique: dict[int, set[str]] = {oid: set() for oid in oids}
    foreign: list[ForeignKey] = []
    for con in await conn.fetch(_CONSTRAINTS, oids):
        cols = tuple(con["cols"])
        if con["contype"] == "p":
            primary[con["conrelid"]] = cols
        if con["contype"] in ("p", "u") and len(cols) == 1:
            unique[con["conrelid"]].add(cols[0])
        if con["contype"] == "f" and con["confrelid"] in names:
            foreign.append(
                ForeignKey(
                    table=names[con["conrelid"]],
                    columns=cols,
                    parent=names[con["confrelid"]],
                    parent_columns=tuple(con["refcols"]),
                )
            )
    catalog_tables = {
        names[oid]: Table(
            name=names[oid],
            columns=tuple(
                Column(
                    name=r["attname"],
                    type=r["type"],
                    nullable=r["nullable"],
                    unique=r["attname"] in unique[oid],
                )
                for r in columns[oid]
            ),
            primary_key=primary.get(oid, ()),
        )
        for oid in oids
    }
    return Catalog(tables=catalog_tables, foreign_keys=tuple(foreign))
