"""The PII scan gate: find personal data in what is about to be published.

Detectors run over blocks of text (fast, in the regex engine), and each candidate is then
checked with context: card numbers must pass Luhn, carry a known issuer prefix and not sit
inside a longer run of digits (timestamps, ids); SSNs must have a valid area and group;
emails at reserved domains (example.com, .test, .invalid, …) are not people; IBANs must
pass their mod-97 check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_SSN = re.compile(r"(?<![\d-])(\d{3})-(\d{2})-(\d{4})(?![\d-])")
# Digits inside a word (a hex digest, a token) are not a card number.
_CARD = re.compile(r"(?<![\w.:/-])(\d(?:[ -]?\d){12,18})(?![\w.:/-])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+?1[ .-]?)?\(?([2-9]\d{2})\)?[ .-](\d{3})[ .-](\d{4})(?!\d)"
    r"|(?<![\w+])\+[1-9]\d{9,13}(?!\d)"
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})")
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?)(?![A-Za-z0-9])"
)
_RESERVED = (
    ".test",
    ".example",
    ".invalid",
    ".localhost",
    "example.com",
    "example.net",
    "example.org",
)
_CARD_PREFIXES = (
    "4",
    "51",
    "52",
    "53",
    "54",
    "55",
    "22",
    "23",
    "24",
    "25",
    "26",
    "27",
    "34",
    "37",
    "6011",
    "65",
    "35",
    "36",
    "30",
    "38",
    "39",
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    digits = "".join(str(int(ch, 36)) for ch in moved)
    return int(digits) % 97 == 1


# Shapes every detector needs, with digits turned into 0 and capitals into A: a block with
# none of them is skipped at memchr speed, without running a regex over it.
_SHAPE = bytes.maketrans(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"0" * 10 + b"A" * 26)
_NEEDS = {
    "ssn": (b"000-00-0000",),
    "card": (b"0000000000000", b"0000 0000 0000", b"0000-0000-0000"),
    "phone": (b"000) 000", b"000-000-0000", b"000.000.0000", b"000 000 0000", b"+0000000000"),
    "email": (b"@",),
    "iban": (b"AA00",),
}


def _candidates(text: str) -> set[str]:
    shape = text.encode().translate(_SHAPE)
    return {kind for kind, needles in _NEEDS.items() if any(n in shape for n in needles)}


def find_pii(text: str) -> Iterable[tuple[str, str]]:
    """(kind, value) for every likely piece of personal data in `text`."""
    kinds = _candidates(text)
    if not kinds:
        return
    if "ssn" in kinds:
        yield from _ssns(text)
    if "card" in kinds:
        yield from _cards(text)
    if "phone" in kinds:
        yield from _phones(text)
    if "email" in kinds:
        yield from _emails(text)
    if "iban" in kinds:
        yield from _ibans(text)


def _ssns(text: str) -> Iterable[tuple[str, str]]:
    for match in _SSN.finditer(text):
        area, group, serial = match.groups()
        if area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000":
            yield "ssn", match.group(0)


def _cards(text: str) -> Iterable[tuple[str, str]]:
    for match in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", match.group(1))
        grouped = digits != match.group(1)
        if (
            13 <= len(digits) <= 19
            and digits.startswith(_CARD_PREFIXES)
            and luhn_ok(digits)
            and (grouped or len(digits) in (15, 16))
        ):
            yield "card number", match.group(1)


def _phones(text: str) -> Iterable[tuple[str, str]]:
    for match in _PHONE.finditer(text):
        if match.group(1) is None or match.group(2) != "555":  # 555 numbers are fictional
            yield "phone number", match.group(0)


def _emails(text: str) -> Iterable[tuple[str, str]]:
    for match in _EMAIL.finditer(text):
        if not match.group(1).lower().endswith(_RESERVED):
            yield "email", match.group(0)


def _ibans(text: str) -> Iterable[tuple[str, str]]:
    for match in _IBAN.finditer(text):
        if _iban_ok(match.group(1)):
            yield "iban", match.group(1)


def redact(value: str) -> str:
    """Show the shape and the last few characters, never the whole value."""
    keep = 4 if len(value) > 8 else 2
    head = "".join("*" if ch.isalnum() else ch for ch in value[:-keep])
    return head + value[-keep:]


@dataclass
class Finding:
    table: str
    column: str
    kind: str
    count: int
    sample: str

    def line(self) -> str:
        place = f"{self.table}.{self.column}" if self.column else self.table
        if self.table == "schema":
            place = f"the schema ({self.column})"
        return f"{place}: {self.count} {self.kind} value(s), e.g. {self.sample}"


class Findings:
    """Accumulates hits per (table, column, kind), with one redacted sample each."""

    def __init__(self, allow: list[re.Pattern[str]]) -> None:
        self.allow = allow
        self.hits: dict[tuple[str, str, str], Finding] = {}

    def allowed(self, value: str) -> bool:
        return any(pattern.fullmatch(value) for pattern in self.allow)

    def add(self, table: str, column: str, kind: str, value: str) -> None:
        if self.allowed(value):
            return
        key = (table, column, kind)
        found = self.hits.get(key)
        if found is None:
            self.hits[key] = Finding(table, column, kind, 1, redact(value))
        else:
            found.count += 1

    def merge(self, other: Findings) -> None:
        for key, finding in other.hits.items():
            if key in self.hits:
                self.hits[key].count += finding.count
            else:
                self.hits[key] = finding

    def report(self) -> list[Finding]:
        return sorted(self.hits.values(), key=lambda f: (f.table, f.column, f.kind))
