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
from provisioning.shrink.catalog import JSON, TEXT
from provisioning.shrink.copytext import END, NULL, decode, encode
from provisioning.shrink.detect import PiiDetector
from provisioning.shrink.fields import JSON_STRING, map_array, reader
from provisioning.shrink.rules import Mask, Rule, digest, json_paths
from provisioning.shrink.scan import Findings

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
    def rewrites(self) -> bool:
        return self.keep is not None or bool(self.masks)

    @property
    def only_scanned(self) -> bool:
        """Every row kept as it is, and only text and json to look at: the file can be
        checked in blocks rather than row by row."""
        return (
            not self.rewrites
            and not self.refs
            and all(kind in (TEXT, JSON) for kind in self.scans.values())
        )

    @property
    def target(self) -> Path:
        return self.output or self.path.with_name(self.path.name + ".gz")


Refs = list[set[tuple[str, ...] | str]]
_BLOCK = 1 << 23


def blocks(path: Path, span: tuple[int, int] | None = None) -> Iterator[str]:
    """A file, or a byte range of it that starts and ends on line boundaries, in large
    pieces that each end with a whole line. Only "\\n" ends a line: COPY escapes the others
    it writes."""
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
            if cut:
                yield data[:cut].decode()
        if rest:
            yield rest.decode()


def lines(path: Path, span: tuple[int, int] | None = None) -> Iterator[str]:
    """The lines (without their newline) of a file or of a byte range of it."""
    for block in blocks(path, span):
        yield from block[:-1].split("\n") if block.endswith("\n") else block.split("\n")


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


class _Rows:
    """The work on one row: filter, mask, scan, collect keys. Rows go in as COPY lines and
    come out masked, or not at all."""

    def __init__(
        self,
        plan: TablePlan,
        salt: bytes,
        pii_values: set[str],
        findings: Findings,
        detector: PiiDetector,
    ) -> None:
        self.plan = plan
        self.detector = detector
        self.salt = salt
        self.pii_values = pii_values
        self.findings = findings
        self.masks = {
            position: rule.masker(unique=position in plan.unique_masked, salt=salt)
            for position, rule in plan.masks.items()
        }
        for position in plan.arrays & set(self.masks):
            self.masks[position] = _elementwise(self.masks[position], salt)
        self.caches: dict[int, dict[str, str]] = {p: {} for p in plan.masks}
        self.seen: dict[int, set[str]] = {p: set() for p in plan.unique_masked}
        self.readers = {p: reader(kind) for p, kind in plan.scans.items()}
        self.plain = {p for p, kind in plan.scans.items() if kind == TEXT}
        self.blocks: dict[int, list[str]] = {p: [] for p in plan.scans}
        self.refs: Refs = [set() for _ in plan.refs]
        self.single = [len(r) == 1 for r in plan.refs]
        self.kept = 0

    def take(self, line: str) -> str | None:
        plan = self.plan
        fields = line.split("\t")
        if plan.keep is not None and _key(fields, plan.key_positions) not in plan.keep:
            return None
        for position, mask in self.masks.items():
            raw = fields[position]
            if raw != NULL:
                fields[position] = self._mask(position, mask, raw)
        for position, block in self.blocks.items():
            raw = fields[position]
            if raw == NULL:
                continue
            if position in self.plain:
                text, exact = raw, [raw]
            else:
                text, exact = self.readers[position](raw)
            for value in exact:
                if value in self.pii_values:
                    self.findings.add(
                        plan.name,
                        plan.columns[position],
                        "value copied from a pii column",
                        decode(value) or "",
                    )
            if text:
                block.append(text)
                if len(block) >= _SCAN_EVERY:
                    self.scan(position)
        for index, positions in enumerate(plan.refs):
            if self.single[index]:
                value = fields[positions[0]]
                if value != NULL:
                    self.refs[index].add(value)
            else:
                values = tuple(fields[p] for p in positions)
                if NULL not in values:
                    self.refs[index].add(values)
        self.kept += 1
        return "\t".join(fields) + "\n"

    def _mask(self, position: int, mask: Mask, raw: str) -> str:
        plan = self.plan
        cache = self.caches[position]
        masked = cache.get(raw)
        if masked is None:
            value = decode(raw) or ""
            try:
                masked = encode(mask(value, digest(self.salt, value)))
            except ValueError as exc:
                raise ProvisioningFailed(
                    f"masking {plan.name}.{plan.columns[position]} failed: {exc}."
                ) from exc
            if len(cache) > _CACHE_LIMIT:
                cache.clear()
            cache[raw] = masked
        if position in self.seen:
            if masked in self.seen[position]:
                raise ProvisioningFailed(
                    f"masking {plan.name}.{plan.columns[position]} made two different values "
                    "equal, but the column is unique: use a rule that keeps values apart "
                    "(fake with unique: true, or hash)."
                )
            self.seen[position].add(masked)
        return masked

    def scan(self, position: int) -> None:
        block = self.blocks[position]
        if block:
            for kind, value in self.detector.find("\n".join(block)):
                self.findings.add(self.plan.name, self.plan.columns[position], kind, value)
            block.clear()

    def finish(self) -> None:
        for position in self.blocks:
            self.scan(position)


def _clean(plan: TablePlan, data: str, pii_values: set[str], detector: PiiDetector) -> bool:
    """True when a block of rows needs no row-by-row look: nothing in it is shaped like
    personal data or equals a pii value, and no json escape could hide either. Decided on
    the whole block at once, in C; a block that fails is read row by row, which has the
    final say (it knows the columns)."""
    documents = any(kind == JSON for kind in plan.scans.values())
    if documents and "\\\\" in data:  # an escape inside a document (COPY doubles it)
        return False
    if next(iter(detector.find(data)), None) is not None:
        return False
    if not pii_values:
        return True
    if not pii_values.isdisjoint(data.replace("\n", "\t").split("\t")):
        return False
    return not documents or pii_values.isdisjoint(JSON_STRING.findall(data))


def process(
    plan: TablePlan,
    salt: bytes,
    pii_values: set[str],
    allow: list[re.Pattern[str]],
    detector: PiiDetector,
) -> tuple[int, Findings, Refs]:
    """Filter, mask, scan and compress one data file (or a piece of one); return the rows
    kept, what the scan found and the foreign-key values. Runs in a worker process, so it
    takes and returns only plain values.

    A file that keeps every row, masks nothing, holds only text and json, and reports no
    keys is copied through in blocks, each checked whole; only a block that looks suspect
    is read row by row."""
    findings = Findings(allow)
    rows = _Rows(plan, salt, pii_values, findings, detector)
    whole = plan.only_scanned
    output = _Writer(plan.target, plan.level)
    try:
        for block in blocks(plan.path, plan.span):
            end = _end_of_data(block)
            data = block[:end]
            if whole and _clean(plan, data, pii_values, detector):
                rows.kept += data.count("\n")
                output.write(block)
                continue
            for line in _split(data):
                taken = rows.take(line)
                if taken is not None:
                    output.write(taken)
            output.write(block[end:])
        rows.finish()
    except BaseException:
        output.close()
        plan.target.unlink(missing_ok=True)
        raise
    output.close()
    if plan.span is None:
        os.unlink(plan.path)
    return rows.kept, findings, rows.refs


def _split(data: str) -> list[str]:
    if not data:
        return []
    return (data[:-1] if data.endswith("\n") else data).split("\n")


def _end_of_data(block: str) -> int:
    """Where COPY's end marker (a line `\\.`) starts in a block, or its length."""
    if block.startswith(END + "\n") or block == END:
        return 0
    found = block.find("\n" + END + "\n")
    if found < 0 and block.endswith("\n" + END):
        found = len(block) - len(END) - 1
    return len(block) if found < 0 else found + 1


def _elementwise(mask: Mask, salt: bytes) -> Mask:
    """A rule applied to each element of an array, each keyed by its own value."""

    def each(value: str, key: bytes) -> str:
        return map_array(value, lambda item: mask(item, digest(salt, item)))

    return each
