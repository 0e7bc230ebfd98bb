-- The scheduler: what the reaper saw and said, protection leases, sweeps, orphans, lost.
alter table devdb.environments
    add column activity jsonb,               -- the probe's last reading
    add column warned_at timestamptz,        -- when the owner was warned of a reap
    add column warned_reason text,
    add column protected_until timestamptz;  -- no idle or expiry reap before this

alter table devdb.environments drop constraint environments_state_check;
alter table devdb.environments add constraint environments_state_check
    check (state in ('provisioning', 'ready', 'destroying', 'destroyed', 'failed',
                     'interrupted', 'lost'));

-- When each sweep last ran, so replicas run it once per interval.
create table devdb.sweeps (
    name      text primary key,
    last_run  timestamptz not null,
    last_by   text not null
);

-- Driver resources no environment accounts for, and since when.
create table devdb.orphans (
    kind        text not null,
    key         text not null,
    first_seen  timestamptz not null default now(),
    primary key (kind, key)
);
