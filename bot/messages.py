"""User-facing text, in one place, for every front end."""

from __future__ import annotations

from provisioning.models import Connection, TableSet


def connection_details(name: str, endpoint: Connection, service: str) -> str:
    if isinstance(endpoint, TableSet):
        return "\n".join([f"Environment {name!r} is ready.", *table_set_lines(endpoint)])
    return "\n".join(
        [
            f"Environment {name!r} is ready.",
            f"  host      {endpoint.host}",
            f"  port      {endpoint.port}",
            f"  database  {endpoint.database}",
            f"  user      {endpoint.user}",
            f"  password  {endpoint.password}",
            f"  dsn       {endpoint.dsn}",
            f"Connect:    psql service={service}",
        ]
    )


def table_set_lines(tables: TableSet) -> list[str]:
    """A DynamoDB environment's details: what an application and the AWS CLI need."""
    where = f"{tables.url} (embedded: any AWS credentials will do)" if tables.url else "AWS"
    endpoint_option = f" --endpoint-url {tables.url}" if tables.url else ""
    first = tables.tables[0] if tables.tables else f"{tables.prefix}TABLE"
    return [
        f"  prefix     {tables.prefix}",
        f"  region     {tables.region}",
        f"  endpoint   {where}",
        f"  ssm path   {tables.parameters} (prefix, region, endpoint)",
        f"  tables     {', '.join(tables.tables)}",
        f"Try:        aws dynamodb scan --table-name {first} --region {tables.region}"
        + endpoint_option
        + " --max-items 5",
    ]


def clone_method(method: str) -> str:
    if method == "reflink":
        return "New local environments here are block-sharing clones (reflink): about a second."
    return "New local environments here are plain copies of the golden copy (no reflink here)."


def copies_not_clones(home: str) -> str:
    return (
        f"Environments are plain copies here because the filesystem under {home} cannot share "
        "blocks: put DEVDB_HOME on XFS made with `mkfs.xfs -m reflink=1` or on btrfs (or, as "
        "root, set DEVDB_CLONE_IMAGE=50G for a loop-mounted XFS image), and each one is ready "
        "in about a second whatever its size."
    )


def saved(name: str, snapshot_id: str) -> str:
    return (
        f"Environment {name!r} is saved as snapshot {snapshot_id}; only you (and admins) can "
        "see it and make environments from it."
    )


def reset_done(name: str, sessions: int) -> str:
    ended = f"; {sessions} open session(s) were ended" if sessions else ""
    return f"Environment {name!r} is back to its snapshot, with the same connection details{ended}."


def destroyed(name: str) -> str:
    return f"Environment {name!r} was destroyed."


def extended(name: str, until: str) -> str:
    return f"Environment {name!r} now expires at {until}."


def demo_published(snapshot_id: str, rows: int, *, dynamodb: bool = False) -> str:
    what, then = ("items", "devdb refresh --dynamodb") if dynamodb else ("rows", "devdb refresh")
    return (
        f"Published snapshot {snapshot_id}: {rows:,} {what} of generated demo data, subset to "
        f"sandbox tenants and masked.\nNext: {then}"
    )


def shrunk(snapshot_id: str, rows: int, tables: int) -> str:
    return (
        f"Published snapshot {snapshot_id}: {rows:,} rows in {tables} tables, masked and scanned."
    )


def policy_drafted(path: str, tables: int, sensitive: int) -> str:
    return (
        f"Wrote {path}: {tables} tables, {sensitive} columns marked pii or secret. "
        "Review it, then run `devdb policy check`."
    )


def scanned(where: str, tables: int, rows: int, places: int) -> str:
    found = f"personal data in {places} place(s)" if places else "no personal data"
    return f"Scanned {where}: {tables} table(s), {rows:,} row(s); {found}."


def policy_ok_dynamo() -> str:
    return "The policy covers every table and every attribute seen in the sampled items."


def policy_ok(tables: int) -> str:
    return f"The policy covers all {tables} tables and every column."


def interrupted() -> str:
    return "interrupted; anything the command had started was cleaned up."


def unexpected(log: str) -> str:
    return f"something unexpected went wrong; the details are in {log}."


def refresh_started(name: str) -> str:
    return (
        f"Refreshing `{name}`; progress follows in this channel, the connection details only "
        "to you."
    )


def slack_status(name: str, state: str, snapshot: str | None) -> str:
    return f"`{name}` is {state} (snapshot `{snapshot}`)."


def not_yours(name: str, owner: str) -> str:
    return f"`{name}` belongs to <@{owner}>; only its owner or an admin sees how to connect."


def serving(port: int) -> str:
    return f"Serving Slack requests on port {port} at /slack/events (Ctrl-C stops)."


def reap_warning(name: str, reason: str, within: str) -> str:
    return f"{name} will be destroyed in about {within}: {reason}."


def kept(name: str, until: str) -> str:
    return f"Kept `{name}`: it now expires at {until}."


def already_local(name: str, port: int, service: str) -> str:
    return (
        f"{name} runs on this machine: it already listens on 127.0.0.1:{port}.\n"
        f"  psql service={service}"
    )


def reachable_directly(name: str, host: str, port: int, service: str) -> str:
    return (
        f"{name} is on the shared server, reached directly at {host}:{port}: no forward "
        f"needed.\n  psql service={service}"
    )


def forwarding(name: str, port: int, service: str) -> str:
    return f"Forwarding localhost:{port} to {name}; stop with Ctrl-C.\n  psql service={service}"


def protected(name: str, until: str) -> str:
    return f"{name} will not be reaped for idleness or expiry before {until}."


def scheduling() -> str:
    return "devdb scheduler: reaping, reconciling, the warm pool and the nightly rebuild run."


def migration_output(name: str, output: str, limit: int = 2500) -> str:
    """What a failed migration printed, for its requester: the end of it, as code."""
    shown = output if len(output) <= limit else "…" + output[-limit:]
    return f"The migrations for {name} printed:\n```{shown.replace('```', '` ` `')}```"


def restored_into(snapshot: str, shown: str, rows: int) -> str:
    return f"Restored snapshot {snapshot} into {shown} ({rows:,} rows)."


def using(name: str, host: str, port: int) -> str:
    return (
        f"service=devdb now reaches {name} at {host}:{port}; switch with devdb use OTHER.\n"
        "  psql service=devdb"
    )
