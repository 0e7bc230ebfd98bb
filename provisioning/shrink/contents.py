"""Accounting for everything a dump holds, before anything of it is published.

Every file in a directory-format dump is either the table of contents (`toc.dat`), a table's
data (`NNNN.dat`, named by its TOC entry), or large objects (`blobs.toc`, `blob_OID.dat`).
Each data file is matched to the policy through its TOC entry's OID, which pg_dump sets to
the table's OID: no name is parsed back out of text. A file that cannot be matched, the data
of a dropped table, or large objects the policy does not keep stop the publish.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from provisioning.errors import PolicyViolation
from provisioning.shrink.catalog import Catalog, Member
from provisioning.shrink.policy import Policy
from provisioning.snapshots.dump import read_entries

_DATA_FILE = re.compile(r"^(\d+)\.dat(\.gz)?$")
_BLOB_FILE = re.compile(r"^(blobs\.toc|blob_\d+\.dat(\.gz)?)$")


@dataclass(frozen=True, kw_only=True)
class DataFile:
    name: str  # the file in the dump directory
    table: str  # the policy table its rows belong to
    member: Member  # the relation it holds


@dataclass(frozen=True, kw_only=True)
class Contents:
    data: tuple[DataFile, ...]
    large_objects: tuple[str, ...]  # blob_OID.dat files (the policy keeps large objects)


def account(listing: str, dump_dir: Path, catalog: Catalog, policy: Policy) -> Contents:
    """Match every file of the dump to the policy; `PolicyViolation` names what does not."""
    entries = read_entries(listing)
    data: list[DataFile] = []
    blobs: list[str] = []
    problems: list[str] = []
    for path in sorted(dump_dir.iterdir()):
        name = path.name
        if name == "toc.dat":
            continue
        if _BLOB_FILE.match(name):
            if policy.large_objects != "keep":
                problems.append(f"{name}: large objects, which the policy does not keep")
            elif name.startswith("blob_"):
                blobs.append(name)
            continue
        match = _DATA_FILE.match(name)
        entry = entries.get(match.group(1)) if match else None
        if entry is None:
            problems.append(f"{name}: a file with no table-of-contents entry")
            continue
        oid, description = entry
        found = catalog.members.get(oid) if description.startswith("TABLE DATA ") else None
        if found is None:
            problems.append(f"{name}: {description} (OID {oid}), which no policy table holds")
            continue
        table, member = found
        if policy.tables[table].action == "drop":
            problems.append(f"{name}: rows of {member.name}, which the policy drops")
            continue
        data.append(DataFile(name=name, table=table, member=member))
    if problems:
        raise PolicyViolation(
            f"the dump holds {len(problems)} entr{'y' if len(problems) == 1 else 'ies'} devdb "
            f"cannot account for, so nothing was published: {problems[0]}",
            problems=problems,
        )
    return Contents(data=tuple(data), large_objects=tuple(blobs))
