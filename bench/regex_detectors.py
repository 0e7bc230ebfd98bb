"""The scan gate's detectors as they were before phonenumbers and python-stdnum: regular
expressions tuned to the United States (NANP phones, SSNs, Luhn cards, IBANs, emails).
Kept only so that bench/scan.py can compare throughput in the same run."""

from __future__ import annotations

import re
from collections.abc import Iterable

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
