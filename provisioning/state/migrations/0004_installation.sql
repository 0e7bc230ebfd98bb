-- One installation of devdb (every replica on this state store): its id tags what it makes
-- in a shared cloud account, so installations never see or remove each other's resources.
create table devdb.installation (
    id          text primary key,
    created_at  timestamptz not null default now()
);
insert into devdb.installation (id)
    values (substr(md5(random()::text || clock_timestamp()::text), 1, 12));
