-- Environments, refresh jobs with their steps, and the audit log.
create table devdb.environments (
    id              bigserial primary key,
    name            text not null,
    owner           text not null,
    kind            text not null,
    state           text not null check (state in ('provisioning', 'ready', 'destroying', 'destroyed', 'failed')),
    snapshot_id     text,
    handle          jsonb not null default '{}',
    host            text,
    port            integer,
    database        text,
    username        text,
    replaces        bigint references devdb.environments (id),
    created_at      timestamptz not null default now(),
    ready_at        timestamptz,
    expires_at      timestamptz not null,
    last_active_at  timestamptz,
    finished_at     timestamptz,
    error           text
);

-- One refresh at a time per name, and one serving environment per name.
create unique index environments_provisioning_name on devdb.environments (name) where state = 'provisioning';
create unique index environments_ready_name on devdb.environments (name) where state = 'ready';
-- Two local environments never share a port.
create unique index environments_local_port on devdb.environments (port)
    where kind = 'local' and state in ('provisioning', 'ready', 'destroying');
create index environments_owner on devdb.environments (owner) where state in ('provisioning', 'ready', 'destroying');

create table devdb.jobs (
    id              bigserial primary key,
    kind            text not null,
    environment_id  bigint not null references devdb.environments (id),
    requested_by    text not null,
    state           text not null check (state in ('running', 'succeeded', 'failed')),
    step            text,
    worker          text not null,
    lease_until     timestamptz not null,
    progress        jsonb,
    error           text,
    created_at      timestamptz not null default now(),
    finished_at     timestamptz
);
create index jobs_running on devdb.jobs (lease_until) where state = 'running';

create table devdb.job_steps (
    job_id       bigint not null references devdb.jobs (id),
    step         text not null,
    state        text not null check (state in ('started', 'done', 'failed')),
    started_at   timestamptz not null default now(),
    finished_at  timestamptz,
    detail       jsonb,
    primary key (job_id, step)
);

create table devdb.audit_log (
    id      bigserial primary key,
    at      timestamptz not null default now(),
    actor   text not null,
    action  text not null,
    target  text,
    result  text not null,
    detail  jsonb
);
create index audit_log_target on devdb.audit_log (target, at);
