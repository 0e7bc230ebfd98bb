"""Streaming pg_dump's table data through the policy: keep the chosen rows, mask, scan, and
write the result gzip-compressed.

Each data file (COPY text) is read once and written once, line by line, so memory stays
flat however large the table is. pg_restore reads `NNNN.dat.gz` in place of `NNNN.dat`, and
gzip members may be concatenated, so a large file can be cut into pieces that workers write
apart and that are then joined. Alongside, each piece collects the values that foreign keys
join on, after masking, so that the caller can prove the snapshot restores.
"""

from __future__ import annotations

import itertools
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.errors import ProvisioningFailed
from provisioning.shrink import documents
from provisioning.shrink.catalog import TEXT
from provisioning.shrink.copytext import END, NULL, decode, encode
from provisioning.shrink.fields import map_array, reader
from provisioning.shrink.rules import Mask, Rule, digest, json_paths
from provisioning.shrink.scan import Findings, find_pii

_SCAN_EVERY = 4000  # fields per block handed to the regex engine
_CACHE_LIMIT = 200_000
_WRITE_EVERY = 1 << 20  # characters of output compressed at a time
MIN_COPIED = 4  # shorter pii values are too common to call a copy


@dataclass(kw_only=True)
class TablePlan:
    name: str  # the policy table
    relation: str  # the relation this data file holds (the table, or a partition of it)
    path: Path
    columns: tuple[str, ...]  # the relation's columns, in COPY order
    keep: set[tuple[str | None, ...]] | None = None  # None: every row
    key_positions: tuple[int, ...] = ()
    masks: dict[int, Rule] = field(default_factory=dict)
    arrays: frozenset[int] = frozenset()  # masked positions that hold arrays: element-wise
    unique_masked: frozenset[int] = frozenset()
    scans: dict[int, str] = field(default_factory=dict)  # position -> kind, for kept text
    pii_positions: tuple[int, ...] = ()  # source values to look for elsewhere
    refs: tuple[tuple[int, ...], ...] = ()  # column sets whose output values are collected
    span: tuple[int, int] | None = None  # a byte range of the file
    output: Path | None = None  # where the compressed result goes (default: path + ".gz")
    level: int = 1

    @property
    def target(self) -> Path:
        return self.output or self.path.with_name(self.path.name + ".gz")


Refs = list[set[tuple[str, ...] | str]]
_BLOCK = 1 << 23


def lines(path: Path, span: tuple[int, int] | None = None) -> Iterator[str]:
    """The lines (without their newline) of a file or of a byte range that starts and ends
    on line boundaries. Only "\\n" ends a line: COPY escapes the others it writes."""
    start, end = span or (0, path.stat().st_size)
    with open(path, "rb") as handle:
        handle.seek(start)
        position = start
        rest = b""
        while position < end:
            chunk = handle.read(min(_BLOCK, end - position))
            if not chunk:
                break
            position += len(chunk)
            data = rest + chunk
            cut = len(data) if position >= end else data.rfind(b"\n") + 1
            rest = data[cut:]
            block = data[:cut].decode()
            yield from block[:-1].split("\n") if block.endswith("\n") else block.split("\n")
        if rest:
            yield from rest.decode().split("\n")


def split_spans(path: Path, parts: int) -> list[tuple[int, int]]:
    """Cut a file into about `parts` byte ranges that begin and end at line boundaries."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as handle:
        for index in range(1, parts):
            handle.seek(max(cuts[-1], size * index // parts))
            handle.readline()
            cuts.append(min(size, handle.tell()))
    cuts.append(size)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _key(fields: list[str], positions: tuple[int, ...]) -> tuple[str | None, ...]:
    return tuple(decode(fields[p]) for p in positions)


def collect_pii_values(plan: TablePlan) -> set[str]:
    """The source's pii/secret values of one data file, as COPY fields: whole fields, or
    what a `json` rule's paths reach inside documents."""
    values: set[str] = set()
    inside = {
        p: [
            path for path, rule in json_paths(plan.masks[p].params.get("paths")) if rule.identifying
        ]
        for p in plan.pii_positions
        if p in plan.masks and plan.masks[p].name == "json"
    }
    for line in lines(plan.path, plan.span):
        if line.startswith(END):
            break
        fields = line.split("\t")
        if plan.keep is not None and _key(fields, plan.key_positions) not in plan.keep:
            continue
        for p in plan.pii_positions:
            if p not in inside:
                values.add(fields[p])
                continue
            try:
                document = documents.loads(decode(fields[p]) or "null")
            except ValueError:
                continue
            for path in inside[p]:
                documents.apply(document, path, lambda node: _gather(node, values))
    return {v for v in values if v != NULL and len(v) >= MIN_COPIED}


def _gather(node: object, values: set[str]) -> object:
    for value in documents.scalars(node):
        values.add(encode(str(value)))
    return node


class _Writer:
    """Compressed output, written in large pieces."""

    def __init__(self, path: Path, level: int) -> None:
        self.handle = open(path, "wb")  # noqa: SIM115
        self.zip = zlib.compressobj(level, zlib.DEFLATED, 31)
        self.pending: list[str] = []
        self.size = 0

    def write(self, text: str) -> None:
        self.pending.append(text)
        self.size += len(text)
        if self.size >= _WRITE_EVERY:
            self.flush()

    def flush(self) -> None:
        self.handle.write(self.zip.compress("".join(self.pending).encode()))
        self.pending.clear()
        self.size = 0

    def close(self) -> None:
        self.flush()
        self.handle.write(self.zip.flush())
        self.handle.close()


def process(
    plan: TablePlan, salt: bytes, pii_values: set[str], allow: list[re.Pattern[str]]
) -> tuple[int, Findings, Refs]:
    """Filter, mask, scan and compress one data file (or a piece of one); return the rows
    kept, what the scan found and the foreign-key values. Runs in a worker process, so it
    takes and returns only plain values."""
    findings = Findings(allow)
    masks = {
        position: rule.masker(unique=position in plan.unique_masked, salt=salt)
        for position, rule in plan.masks.items()
    }
    for position in plan.arrays & set(masks):
        masks[position] = _elementwise(masks[position], salt)
    caches: dict[int, dict[str, str]] = {p: {} for p in plan.masks}
    seen: dict[int, set[str]] = {p: set() for p in plan.unique_masked}
    readers = {p: reader(kind) for p, kind in plan.scans.items()}
    plain = {p for p, kind in plan.scans.items() if kind == TEXT}
    blocks: dict[int, list[str]] = {p: [] for p in plan.scans}
    refs: Refs = [set() for _ in plan.refs]
    single = [len(r) == 1 for r in plan.refs]
    kept = 0
    output = _Writer(plan.target, plan.level)
    try:
        source = lines(plan.path, plan.span)
        for line in source:
            if line.startswith(END):
                output.write(line + "\n")
                output.write("".join(rest + "\n" for rest in source))
                break
            fields = line.split("\t")
            if plan.keep is not None and _key(fields, plan.key_positions) not in plan.keep:
                continue
            for position, mask in masks.items():
                raw = fields[position]
                if raw == NULL:
                    continue
                cache = caches[position]
                masked = cache.get(raw)
                if masked is None:
                    value = decode(raw) or ""
                    try:
                        masked = encode(mask(value, digest(salt, value)))
                    except ValueError as exc:
                        raise ProvisioningFailed(
                            f"masking {plan.name}.{plan.columns[position]} failed: {exc}."
                        ) from exc
                    if len(cache) > _CACHE_LIMIT:
                        cache.clear()
                    cache[raw] = masked
                if position in seen:
                    if masked in seen[position]:
                        raise ProvisioningFailed(
                            f"masking {plan.name}.{plan.columns[position]} made two "
                            "different values equal, but the column is unique: use a "
                            "rule that keeps values apart (fake with unique: true, or hash)."
                        )
                    seen[position].add(masked)
                fields[position] = masked
            for position, block in blocks.items():
                raw = fields[position]
                if raw == NULL:
                    continue
                if position in plain:
                    text, exact = raw, (raw,)
                else:
                    text, exact = readers[position](raw)  # type: ignore[assignment]
                for value in exact:
                    if value in pii_values:
                        findings.add(
                            plan.name,
                            plan.columns[position],
                            "value copied from a pii column",
                            decode(value) or "",
                        )
                if text:
                    block.append(text)
                    if len(block) >= _SCAN_EVERY:
                        _scan(plan, position, block, findings)
            for index, positions in enumerate(plan.refs):
                if single[index]:
                    value = fields[positions[0]]
                    if value != NULL:
                        refs[index].add(value)
                else:
                    values = tuple(fields[p] for p in positions)
                    if NULL not in values:
                        refs[index].add(values)
            kept += 1
            output.write("\t".join(fields) + "\n")
        for position, block in blocks.items():
            _scan(plan, position, block, findings)
    except BaseException:
        output.close()
        plan.target.unlink(missing_ok=True)
        raise
    output.close()
    if plan.span is None:
        os.unlink(plan.path)
    return kept, findings, refs


def _elementwise(mask: Mask, salt: bytes) -> Mask:
    """A rule applied to each element of an array, each keyed by its own value."""

    def each(value: str, key: bytes) -> str:
        return map_array(value, lambda item: mask(item, digest(salt, item)))

    return each


def _scan(plan: TablePlan, position: int, block: list[str], findings: Findings) -> None:
    if block:
        for kind, value in find_pii("\n".join(block)):
            findings.add(plan.name, plan.columns[position], kind, value)
        block.clear()
