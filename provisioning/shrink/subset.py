"""Choosing the rows to keep so that every foreign key in the result still holds.

From the root rows (a root table's `where`, or one tenant), two walks repeat until nothing
new turns up:
- *up*: every kept row pulls in the rows it references (multi-column keys, several keys to
  one table, self-references and cycles alike), whatever those tables' `where` says;
- *down*: rows reached from a root pull in the rows that reference them, filtered by the
  child table's `where` (a time window, say), unless the table says `follow_children: false`.
Rows reached only by walking up never walk down, or one customer would pull in the world.
Keys are kept as each type's output text, which is also how pg_dump's COPY writes them.
A table without a primary key is keyed by its whole row. Queries on a table reach its
partitions and inheritance children; a foreign key declared on one of those is followed
from that relation alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg

from provisioning.errors import InvalidInput
from provisioning.pg.sql import quote_ident, quote_table
from provisioning.shrink.catalog import Catalog, ForeignKey, Table
from provisioning.shrink.policy import Policy

Key = tuple[str | None, ...]
_BATCH = 5000


@dataclass
class Selection:
    """The keys to keep per subset table; tables kept whole or dropped are listed apart."""

    keys: dict[str, set[Key]] = field(default_factory=dict)
    whole: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)


class _Walker:
    def __init__(self, conn: asyncpg.Connection, policy: Policy, catalog: Catalog) -> None:
        self.conn = conn
        self.policy = policy
        self.catalog = catalog
        self.fks = policy.foreign_keys(catalog)
        self.selection = Selection()
        self.went_down: dict[str, set[Key]] = {}
        self.up: dict[str, set[Key]] = {}
        self.down: dict[str, set[Key]] = {}
        for name in catalog.tables:
            action = policy.tables[name].action
            if action == "subset":
                self.selection.keys[name] = set()
                self.went_down[name] = set()
            elif action == "keep":
                self.selection.whole.add(name)
            else:
                self.selection.dropped.add(name)

    async def fetch(
        self,
        table: Table,
        match: tuple[str, ...],
        values: Iterable[Key],
        select: tuple[str, ...],
        where: str | None = None,
        relation: str | None = None,
    ) -> list[Key]:
        """Rows of `table` (or of one `relation` of it) whose `match` columns equal one of
        `values`, as text tuples."""
        values = list(values)
        if where is None and set(select) <= set(match):
            # Everything asked for is in the values already: no query (a whole-row key).
            positions = [match.index(c) for c in select]
            return [tuple(value[p] for p in positions) for value in values]
        chosen = ", ".join(_text(c) for c in select)
        found: list[Key] = []
        for start in range(0, len(values), _BATCH):
            batch = values[start : start + _BATCH]
            types = [table.column(c).type for c in match]  # type: ignore[union-attr]
            arrays = [[row[i] for row in batch] for i in range(len(match))]
            if len(match) == 1:
                condition = f"{quote_ident(match[0])} = any($1::text[]::{types[0]}[])"
            else:
                unnest = ", ".join(f"${i + 1}::text[]::{t}[]" for i, t in enumerate(types))
                columns = ", ".join(quote_ident(c) for c in match)
                condition = f"({columns}) in (select * from unnest({unnest}))"
            extra = f" and ({where})" if where else ""
            source = quote_table(relation or table.name)
            sql = f"select {chosen} from {source} where {condition}{extra}"
            rows = await self._query(sql, *arrays)
            found.extend(tuple(r) for r in rows)
        return found

    async def _query(self, sql: str, *args: object) -> list[asyncpg.Record]:
        try:
            return list(await self.conn.fetch(sql, *args))
        except asyncpg.PostgresError as exc:
            raise InvalidInput(f"a subset query failed: {exc} (query: {sql[:200]})") from exc

    def add(self, table: str, keys: Iterable[Key], *, downward: bool) -> None:
        kept = self.selection.keys.get(table)
        if kept is None:
            return  # kept whole, or dropped (the policy check refuses keys into dropped tables)
        keys = set(keys)
        new = keys - kept
        if new:
            kept |= new
            self.up.setdefault(table, set()).update(new)
        if downward and self.policy.tables[table].follow_children:
            fresh = keys - self.went_down[table]
            if fresh:  # only real work is queued, or two tables could trade nothing forever
                self.went_down[table] |= fresh
                self.down.setdefault(table, set()).update(fresh)

    async def roots(self, tenant: str | None) -> None:
        for name, entry in self.policy.tables.items():
            table = self.catalog.tables.get(name)
            if table is None or entry.action != "subset":
                continue
            if tenant is not None:
                if name != self.policy.tenant_table:
                    continue
                column = quote_ident(self.policy.tenant_column or "id")
                condition, args = f"{column}::text = $1", [tenant]
            elif entry.root:
                condition, args = entry.where or "true", []
            else:
                continue
            pk = ", ".join(_text(c) for c in table.key)
            rows = await self._query(
                f"select {pk} from {quote_table(name)} where {condition}", *args
            )
            if tenant is not None and not rows:
                raise InvalidInput(f"there is no tenant {tenant!r} in {name}.")
            self.add(name, (tuple(r) for r in rows), downward=True)
        if tenant is not None and self.policy.tenant_table not in self.selection.keys:
            raise InvalidInput("--tenant needs a policy whose `tenant.table` is a subset table.")

    async def whole_tables_reach_up(self) -> None:
        for fk in self.fks:
            if fk.table in self.selection.whole and fk.parent in self.selection.keys:
                cols = ", ".join(_text(c) for c in fk.columns)
                not_null = " and ".join(f"{quote_ident(c)} is not null" for c in fk.columns)
                rows = await self._query(
                    f"select distinct {cols} from {quote_table(fk.source)} where {not_null}"
                )
                await self._parents(fk, [tuple(r) for r in rows])

    async def _parents(self, fk: ForeignKey, values: list[Key]) -> None:
        parent = self.catalog.tables[fk.parent]
        if fk.parent_columns == parent.key:
            self.add(fk.parent, values, downward=False)
        elif values:
            keys = await self.fetch(parent, fk.parent_columns, values, parent.key)
            self.add(fk.parent, keys, downward=False)

    async def step_up(self, name: str, keys: set[Key]) -> None:
        table = self.catalog.tables[name]
        for fk in self.fks:
            if fk.table != name or fk.parent not in self.selection.keys:
                continue
            refs = await self.fetch(table, table.key, keys, fk.columns, relation=fk.relation)
            await self._parents(fk, [r for r in set(refs) if None not in r])

    async def step_down(self, name: str, keys: set[Key]) -> None:
        table = self.catalog.tables[name]
        for fk in self.fks:
            if fk.parent != name or fk.table not in self.selection.keys:
                continue
            if fk.parent_columns == table.key:
                refs = list(keys)
            else:
                refs = await self.fetch(table, table.key, keys, fk.parent_columns)
            child = self.catalog.tables[fk.table]
            rows = await self.fetch(
                child,
                fk.columns,
                refs,
                child.key,
                self.policy.tables[fk.table].where,
                relation=fk.relation,
            )
            self.add(fk.table, rows, downward=True)

    async def run(self, tenant: str | None) -> Selection:
        await self.roots(tenant)
        await self.whole_tables_reach_up()
        while self.up or self.down:
            if self.up:
                name, keys = self.up.popitem()
                await self.step_up(name, keys)
            else:
                name, keys = self.down.popitem()
                await self.step_down(name, keys)
        return self.selection


def _text(column: str) -> str:
    """A column as its type's output text, as COPY writes it (`t`, not `true`)."""
    name = quote_ident(column)
    return f"case when {name} is null then null else format('%s', {name}) end"


# What pg_dump sets before its COPYs, so that the keys read here are written the same way.
_AS_PG_DUMP = (
    "set local datestyle = 'ISO'",
    "set local intervalstyle = 'postgres'",
    "set local extra_float_digits = 3",
)


async def select_subset(
    conn: asyncpg.Connection, policy: Policy, catalog: Catalog, tenant: str | None = None
) -> Selection:
    """Walk the source (inside the dump's snapshot) and return what to keep."""
    for statement in _AS_PG_DUMP:
        await conn.execute(statement)
    return await _Walker(conn, policy, catalog).run(tenant)
