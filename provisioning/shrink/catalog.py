"""What a source database holds: tables, the relations that hold their rows, their columns in
COPY order, keys and foreign keys, and every other relation whose contents pg_dump writes.

A *table* is what a policy names: a plain table, a partitioned table, or the root of an
inheritance tree. Its rows live in its *members*: the table itself, its leaf partitions, or
its inheritance children. Everything the policy says of a table applies to every member, and
foreign keys declared on a member count as the table's. Relations are told apart by OID, so
names need never be parsed back out of text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

# How the scan reads a column's values (domains resolved to their base type).
TEXT = "text"  # string types, citext and domains over them: patterns and copied values
ARRAY = "array"  # arrays of anything textual: patterns, and copied values per element
JSON = "json"  # json and jsonb: the document is walked, strings and numbers alike
MARKUP = "markup"  # xml, hstore, tsvector, tsquery: patterns over the text form
BYTES = "bytes"  # bytea: printable runs inside the bytes
OTHER = "other"  # numbers, dates, booleans, enums, network and geometric types
TEXTUAL = (TEXT, ARRAY, JSON, MARKUP)


@dataclass(frozen=True, kw_only=True)
class Column:
    name: str
    type: str  # format_type(), e.g. "character varying(160)"
    nullable: bool
    unique: bool  # alone, the whole of a primary key or unique constraint
    kind: str = TEXT
    base: str = ""  # the base type's name after domains and arrays, e.g. "citext", "int4"

    @property
    def is_text(self) -> bool:
        return self.kind in TEXTUAL


@dataclass(frozen=True, kw_only=True)
class ForeignKey:
    """`table(columns)` references `parent(parent_columns)`.

    `table` and `parent` are policy tables; `relation` is where the key is declared (the
    table itself, or one of its partitions or inheritance children)."""

    table: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    declared: bool = True
    relation: str = ""

    @property
    def source(self) -> str:
        return self.relation or self.table

    def describe(self) -> str:
        return f"{self.table}({', '.join(self.columns)}) → {self.parent}"


@dataclass(frozen=True, kw_only=True)
class Member:
    """A relation that holds rows of a policy table."""

    oid: int
    name: str
    columns: tuple[str, ...]  # in this relation's attribute order, as its COPY writes them
    how: str = "itself"  # itself | partition | inheritance child
    within: tuple[str, ...] = ()  # itself and, for a partition, every partitioned ancestor

    def bound_by(self, fk: ForeignKey) -> bool:
        """True when `fk` constrains this relation's rows."""
        return not fk.relation or fk.relation in (self.within or (self.name,))


@dataclass(frozen=True, kw_only=True)
class Table:
    name: str  # schema-qualified, e.g. "public.invoice"
    columns: tuple[Column, ...]  # the root's, then any that only inheritance children add
    primary_key: tuple[str, ...]
    oid: int = 0
    members: tuple[Member, ...] = ()

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def position(self, name: str) -> int:
        return next(i for i, c in enumerate(self.columns) if c.name == name)

    @property
    def key(self) -> tuple[str, ...]:
        """What tells rows apart: the primary key, or with none, the whole row."""
        return self.primary_key or self.root_columns

    @property
    def root_columns(self) -> tuple[str, ...]:
        """The columns a query on the table itself can see (not a child's extra ones)."""
        own = next((m for m in self.members if m.oid == self.oid), None)
        return own.columns if own else tuple(c.name for c in self.columns)


@dataclass(frozen=True, kw_only=True)
class Catalog:
    tables: dict[str, Table]
    foreign_keys: tuple[ForeignKey, ...] = field(default=())
    members: dict[int, tuple[str, Member]] = field(default_factory=dict)  # oid -> table
    sequences: dict[int, str] = field(default_factory=dict)
    materialized_views: dict[int, str] = field(default_factory=dict)
    belongs_to: dict[str, str] = field(default_factory=dict)  # partition/child -> table

    def parents_of(self, table: str) -> list[ForeignKey]:
        return [fk for fk in self.foreign_keys if fk.table == table]


_RELATIONS = """
with recursive up(oid, root, depth) as (
    select c.oid, c.oid, 0
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
      and n.nspname not like 'pg\\_%'
    union all
    select up.oid, i.inhparent, up.depth + 1
    from up join pg_inherits i on i.inhrelid = up.root and i.inhseqno = 1
)
select distinct on (up.oid) up.oid, up.root, c.relkind::text as relkind,
       c.relispartition as partition, n.nspname || '.' || c.relname as name,
       case when c.relispartition then array(
           select an.nspname || '.' || ac.relname from pg_partition_ancestors(c.oid) a
           join pg_class ac on ac.oid = a.relid join pg_namespace an on an.oid = ac.relnamespace)
       else array[n.nspname || '.' || c.relname] end as within
from up join pg_class c on c.oid = up.oid join pg_namespace n on n.oid = c.relnamespace
order by up.oid, up.depth desc
"""
_OTHERS = """
select c.oid, c.relkind::text as relkind, n.nspname || '.' || c.relname as name
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('S', 'm') and n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname not like 'pg\\_%'
"""
_COLUMNS = """
select a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod) as type,
       not a.attnotnull as nullable, a.atttypid
from pg_attribute a
where a.attrelid = any($1::oid[]) and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
order by a.attrelid, a.attnum
"""
_TYPES = """
select oid, typname, typtype::text as typtype, typbasetype, typelem,
       typcategory::text as category
from pg_type
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
where con.conrelid = any($1::oid[]) and con.contype in ('p', 'u', 'f') and con.conparentid = 0
"""
_MARKUP = ("xml", "hstore", "tsvector", "tsquery")


def _kinds(types: list[asyncpg.Record]) -> dict[int, tuple[str, str]]:
    """Each type's scan kind and base type name, through domains and arrays."""
    by_oid = {t["oid"]: t for t in types}

    def resolve(oid: int, depth: int = 0) -> tuple[str, str]:
        row = by_oid.get(oid)
        if row is None or depth > 8:
            return OTHER, ""
        if row["typtype"] == "d":
            return resolve(row["typbasetype"], depth + 1)
        if row["category"] == "A" and row["typelem"]:
            kind, base = resolve(row["typelem"], depth + 1)
            return (ARRAY if kind != OTHER else OTHER), base
        name = row["typname"]
        if name in ("json", "jsonb"):
            return JSON, name
        if name == "bytea":
            return BYTES, name
        if name in _MARKUP:
            return MARKUP, name
        if row["category"] == "S":
            return TEXT, name
        return OTHER, name

    return {oid: resolve(oid) for oid in by_oid}


async def read_catalog(conn: asyncpg.Connection) -> Catalog:
    """Read the user tables of the database `conn` is connected to."""
    relations = await conn.fetch(_RELATIONS)
    oids = [r["oid"] for r in relations]
    names = {r["oid"]: r["name"] for r in relations}
    root_of = {r["oid"]: r["root"] for r in relations}
    columns: dict[int, list[asyncpg.Record]] = {oid: [] for oid in oids}
    column_rows = await conn.fetch(_COLUMNS, oids)
    for row in column_rows:
        columns[row["attrelid"]].append(row)
    kinds = _kinds(await conn.fetch(_TYPES))
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
                    table=names[root_of[con["conrelid"]]],
                    columns=cols,
                    parent=names[root_of[con["confrelid"]]],
                    parent_columns=tuple(con["refcols"]),
                    relation=names[con["conrelid"]],
                )
            )
    members: dict[int, list[Member]] = {oid: [] for oid in oids if root_of[oid] == oid}
    for row in relations:
        if row["relkind"] == "p":
            continue  # a partitioned table holds no rows of its own
        how = "itself" if row["oid"] == row["root"] else "partition"
        if how == "partition" and not row["partition"]:
            how = "inheritance child"
        members[row["root"]].append(
            Member(
                oid=row["oid"],
                name=row["name"],
                columns=tuple(c["attname"] for c in columns[row["oid"]]),
                how=how,
                within=tuple(row["within"]),
            )
        )
    tables: dict[str, Table] = {}
    for oid, own in members.items():
        seen: dict[str, Column] = {}
        for relation in [oid, *(m.oid for m in own if m.oid != oid)]:
            for r in columns[relation]:
                if r["attname"] not in seen:
                    kind, base = kinds.get(r["atttypid"], (OTHER, ""))
                    seen[r["attname"]] = Column(
                        name=r["attname"],
                        type=r["type"],
                        nullable=r["nullable"],
                        unique=relation == oid and r["attname"] in unique[oid],
                        kind=kind,
                        base=base,
                    )
        tables[names[oid]] = Table(
            name=names[oid],
            columns=tuple(seen.values()),
            primary_key=primary.get(oid, ()),
            oid=oid,
            members=tuple(own),
        )
    others = await conn.fetch(_OTHERS)
    return Catalog(
        tables=dict(sorted(tables.items())),
        foreign_keys=tuple(dict.fromkeys(foreign)),
        members={m.oid: (names[root], m) for root, own in members.items() for m in own},
        sequences={r["oid"]: r["name"] for r in others if r["relkind"] == "S"},
        materialized_views={r["oid"]: r["name"] for r in others if r["relkind"] == "m"},
        belongs_to={names[o]: names[root_of[o]] for o in oids if root_of[o] != o},
    )
