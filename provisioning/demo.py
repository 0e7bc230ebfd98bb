"""A realistic multi-tenant "production" database, generated at a chosen scale.

Tenants (some flagged as sandboxes), their users, contacts with names, emails, phones and
addresses, leads, months of timestamped events (partitioned by month, as such tables
usually are), and payments with Luhn-valid card numbers.
Rows are generated inside PostgreSQL (one scale unit is about 22 MB of table data), from a
fixed seed, so the same scale gives the same data.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import asyncpg

from provisioning.models import ProgressEvent, Step
from provisioning.shrink.policy import Policy, parse_policy

DEMO_DATABASE = "devdb_demo"


def demo_policy() -> Policy:
    """The policy that makes the demo database dev-safe (sandbox tenants, a week, masked)."""
    return parse_policy((resources.files("provisioning.shrink") / "demo_policy.yml").read_text())


# Rows per scale unit.
SIZES = {
    "tenants": 10,
    "users": 200,
    "contacts": 2_000,
    "leads": 1_000,
    "events": 100_000,
    "payments": 5_000,
}

_SCHEMA = """
create table tenants (
    id          bigint primary key,
    name        text not null,
    slug        text not null unique,
    is_sandbox  boolean not null default false,
    plan        text not null,
    created_at  timestamptz not null
);
create table users (
    id             bigint primary key,
    tenant_id      bigint not null references tenants (id),
    email          text not null unique,
    full_name      text not null,
    phone          text,
    role           text not null,
    created_at     timestamptz not null,
    last_login_at  timestamptz
);
create table contacts (
    id           bigint primary key,
    tenant_id    bigint not null references tenants (id),
    owner_id     bigint references users (id),
    first_name   text not null,
    last_name    text not null,
    email        text,
    phone        text,
    street       text,
    city         text,
    postal_code  text,
    country      text,
    company      text,
    created_at   timestamptz not null
);
create table leads (
    id          bigint primary key,
    tenant_id   bigint not null references tenants (id),
    contact_id  bigint not null references contacts (id),
    status      text not null,
    value       numeric(12, 2) not null,
    source      text not null,
    created_at  timestamptz not null
);
create table events (
    id           bigint not null,
    tenant_id    bigint not null references tenants (id),
    user_id      bigint references users (id),
    contact_id   bigint references contacts (id),
    kind         text not null,
    payload      jsonb not null,
    occurred_at  timestamptz not null,
    primary key (id, occurred_at)
) partition by range (occurred_at);
do $$
declare
    month date;
begin
    for month in select generate_series(date_trunc('month', now() - interval '7 months'),
                                        date_trunc('month', now()), interval '1 month')::date
    loop
        execute format('create table %I partition of events for values from (%L) to (%L)',
                       'events_' || to_char(month, 'YYYY_MM'), month,
                       (month + interval '1 month')::date);
    end loop;
end
$$;
create table events_default partition of events default;
create table payments (
    id           bigint primary key,
    tenant_id    bigint not null references tenants (id),
    contact_id   bigint not null references contacts (id),
    amount       numeric(12, 2) not null,
    currency     char(3) not null,
    card_number  text not null,
    card_holder  text not null,
    card_expiry  text not null,
    status       text not null,
    paid_at      timestamptz not null
);
create function pg_temp.pick(items text[], seed bigint) returns text
    language sql immutable as $$ select items[1 + (abs(seed) % array_length(items, 1))] $$;
create function pg_temp.luhn(digits text) returns text language sql immutable as $$
    select digits || ((10 - sum(case when (length(digits) - i) % 2 = 0
                                     then (d * 2) - case when d * 2 > 9 then 9 else 0 end
                                     else d end) % 10) % 10)::text
    from (select i, substr(digits, i, 1)::int as d from generate_series(1, length(digits)) i) s
$$;
"""

_FIRST = (
    "'{Olivia,Liam,Emma,Noah,Ava,Oliver,Sophia,Elijah,Isabella,James,Mia,William,"
    "Amelia,Benjamin,Harper,Lucas,Evelyn,Henry,Abigail,Alexander,Emily,Daniel,Ella,"
    "Matthew,Chloe,Samuel,Grace,David,Zoe,Joseph,Nora,Carter,Lily,Owen,Hannah,Wyatt,"
    "Aria,Jack,Layla,Luke}'::text[]"
)
_LAST = (
    "'{Smith,Johnson,Williams,Brown,Jones,Garcia,Miller,Davis,Rodriguez,Martinez,"
    "Hernandez,Lopez,Gonzalez,Wilson,Anderson,Thomas,Taylor,Moore,Jackson,Martin,Lee,"
    "Perez,Thompson,White,Harris,Sanchez,Clark,Ramirez,Lewis,Robinson,Walker,Young,Allen,"
    "King,Wright,Scott,Torres,Nguyen,Hill,Flores}'::text[]"
)
_CITY = (
    "'{Springfield,Riverside,Franklin,Greenville,Bristol,Clinton,Fairview,Salem,Madison,"
    "Georgetown,Arlington,Ashland,Dover,Oxford,Jackson,Burlington,Manchester,Milton,"
    "Newport,Auburn}'::text[]"
)
_STREET = (
    "'{Main St,Oak Ave,Maple Dr,Cedar Ln,Pine St,Elm St,Washington Ave,Lake Rd,"
    "Hill St,Park Ave,Sunset Blvd,River Rd,Church St,Highland Ave,Mill Rd}'::text[]"
)
_COMPANY = (
    "'{Acme Corp,Globex,Initech,Umbrella Ltd,Hooli,Vandelay Industries,Stark Works,"
    "Wayne Enterprises,Wonka Foods,Soylent Co,Tyrell Systems,Cyberdyne,Aperture Labs,"
    "Gringotts,Oscorp}'::text[]"
)

_INSERTS = {
    "tenants": """
insert into tenants
select i, 'Tenant ' || i, 'tenant-' || i, i % 10 < 3,
       pg_temp.pick('{free,team,business,enterprise}', i),
       now() - (i % 700) * interval '1 day'
from generate_series(1, @tenants@::bigint) i""",
    "users": """
insert into users
select i, 1 + i % @tenants@,
       lower(pg_temp.pick(@FIRST@, i) || '.' || pg_temp.pick(@LAST@, i / 7) || i)
         || '@' || pg_temp.pick('{example.com,mail.test,corp.example,inbox.test}', i),
       pg_temp.pick(@FIRST@, i) || ' ' || pg_temp.pick(@LAST@, i / 7),
       '+1 ' || (200 + i % 700) || '-555-' || lpad((i * 7919 % 10000)::text, 4, '0'),
       pg_temp.pick('{admin,member,viewer}', i),
       now() - (i % 500) * interval '1 day' - (i % 86400) * interval '1 second',
       now() - (i % 30) * interval '1 day'
from generate_series(1, @users@::bigint) i""",
    "contacts": """
insert into contacts
select i, 1 + i % @tenants@,
       -- the owner is a user of the same tenant (user ids ≡ tenant - 1 mod tenants)
       i % @tenants@ + @tenants@ * (1 + (i * 31) % (@users@ / @tenants@ - 1)),
       pg_temp.pick(@FIRST@, i * 13), pg_temp.pick(@LAST@, i * 17),
       lower(pg_temp.pick(@FIRST@, i * 13) || '.' || pg_temp.pick(@LAST@, i * 17) || '.' || i)
         || '@' || pg_temp.pick('{gmail.test,yahoo.test,outlook.test,proton.test}', i),
       '(' || (201 + i % 798) || ') ' || (200 + i * 13 % 800) || '-'
         || lpad((i * 104729 % 10000)::text, 4, '0'),
       (1 + i * 37 % 9999) || ' ' || pg_temp.pick(@STREET@, i * 3),
       pg_temp.pick(@CITY@, i * 5), lpad((i * 7 % 99999)::text, 5, '0'),
       pg_temp.pick('{US,US,US,CA,GB,DE}', i), pg_temp.pick(@COMPANY@, i * 11),
       now() - (i % 400) * interval '1 day'
from generate_series(1, @contacts@::bigint) i""",
    "leads": """
insert into leads
select i, c.tenant_id, c.id,
       pg_temp.pick('{new,contacted,qualified,won,lost}', i),
       round((random() * 50000)::numeric, 2),
       pg_temp.pick('{web,referral,event,ads,partner}', i * 3),
       now() - (i % 300) * interval '1 day'
from generate_series(1, @leads@::bigint) i
join contacts c on c.id = 1 + (i * 7) % @contacts@""",
    "events": """
insert into events
select i, u.tenant_id, u.id,
       case when i % 3 = 0 then null  -- else a contact of the user's own tenant
            else u.id % @tenants@ + @tenants@ * (1 + (i * 11) % (@contacts@ / @tenants@ - 1))
       end,
       pg_temp.pick('{page_view,login,logout,search,export,click,api_call,update}', i),
       jsonb_build_object(
           'path', '/app/' || pg_temp.pick('{dashboard,contacts,leads,reports,settings}', i * 7),
           'ip', '10.' || (i % 256) || '.' || (i * 7 % 256) || '.' || (i * 13 % 256),
           'agent', pg_temp.pick('{Firefox/128 Linux,Safari/17 macOS,Edge/126 Windows}', i),
           'ms', (random() * 900)::int),
       now() - random() * interval '180 days'
from generate_series(1, @events@::bigint) i
join users u on u.id = 1 + (i * 13) % @users@""",
    "payments": """
insert into payments
select i, c.tenant_id, c.id, round((5 + random() * 995)::numeric, 2),
       pg_temp.pick('{USD,USD,EUR,GBP}', i),
       pg_temp.luhn(pg_temp.pick('{4,51,37,6011}', i)
                    || lpad(((i::bigint * 2654435761) % 100000000000000)::text, 14, '0')),
       c.first_name || ' ' || c.last_name,
       lpad((1 + i % 12)::text, 2, '0') || '/' || (27 + i % 5),
       pg_temp.pick('{paid,paid,paid,refunded,failed}', i),
       now() - random() * interval '365 days'
from generate_series(1, @payments@::bigint) i
join contacts c on c.id = 1 + (i * 17) % @contacts@""",
}


async def generate(
    admin_dsn: str,
    *,
    scale: int,
    progress: Callable[[ProgressEvent], None],
    database: str = DEMO_DATABASE,
) -> dict[str, int]:
    """(Re)create `database` on the server `admin_dsn` reaches and fill it; return row counts."""
    counts = {table: per_unit * scale for table, per_unit in SIZES.items()}
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'drop database if exists "{database}" with (force)')
        await admin.execute(f'create database "{database}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(admin_dsn, database=database)
    try:
        await conn.execute("select setseed(0.42)")
        await conn.execute(_SCHEMA)
        for index, (table, sql) in enumerate(_INSERTS.items()):
            progress(
                ProgressEvent(
                    step=Step.RESTORE,
                    message=f"generating {table}",
                    percent=100.0 * index / len(_INSERTS),
                )
            )
            await conn.execute(_render(sql, counts))
        progress(ProgressEvent(step=Step.RESTORE, message="indexing events", percent=95.0))
        await conn.execute("create index events_tenant_time on events (tenant_id, occurred_at)")
        # Vacuum now, so autovacuum does not churn through the fresh tables later (during a
        # dump or a benchmark).
        await conn.execute("vacuum (analyze)")
    finally:
        await conn.close()
    return counts


def _render(sql: str, counts: dict[str, int]) -> str:
    """Fill in the row counts and the word lists (all ours, never user input)."""
    words = {"FIRST": _FIRST, "LAST": _LAST, "CITY": _CITY, "STREET": _STREET, "COMPANY": _COMPANY}
    for key, value in [*counts.items(), *words.items()]:
        sql = sql.replace(f"@{key}@", str(value))
    return sql
