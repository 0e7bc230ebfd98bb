-- Slack deliveries already taken, by their trigger id: every replica of the bot checks here,
-- so a delivery that reaches two replicas (or is redelivered) is acted on once.
create table devdb.deliveries (
    key      text primary key,
    seen_at  timestamptz not null default now()
);
create index deliveries_seen_at on devdb.deliveries (seen_at);
