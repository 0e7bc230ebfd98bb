"""Finding personal data in text, for the whole world.

Phone numbers are validated with `phonenumbers` (Google's libphonenumber metadata), per
region; national identifiers, card numbers and IBANs with `python-stdnum`, whose validators
check the number's own checksum or structure. So a value is reported only when it is a real
number of its kind: ids, amounts, dates and timestamps that merely look like one stay quiet.

Each detector has a cheap regular expression that proposes candidates and a validator that
decides. Before any of them runs, a block of text is reduced to its *shape* (digits become
0, capitals A) and searched for the few shapes each detector needs, at memchr speed: most
blocks hold none and cost almost nothing.

A finding's kind names what was found: `phone:DE`, `national_id:IN.aadhaar`, `card`, `iban`,
`email`. Regions come from `DEVDB_PII_REGIONS`; cards, IBANs, emails and phone numbers
written with their country code are found whatever the regions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import phonenumbers
from stdnum import iban, luhn
from stdnum.br import cnpj, cpf
from stdnum.ca import sin
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.gb import nhs
from stdnum.in_ import aadhaar, pan
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.us import ssn
from stdnum.za import idnr as za_idnr

from provisioning.shrink import phones

DEFAULT_REGIONS = ("US", "GB", "DE", "IN", "BR")
# Digits become 0, capitals A, and a space or a dash between groups "-".
_SHAPE = bytes.maketrans(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ ", b"0" * 10 + b"A" * 26 + b"-")
# A run of nine digits, which every longer one holds: checked first, it spares the others.
_GATES = (b"000000000",)
# Not inside a word, a number, a decimal, a time, a path or a range.
_BEFORE = r"(?<![\w+.:/-])"
_AFTER = r"(?!\w|[.:/-]\w)"


@dataclass(frozen=True)
class Detector:
    kind: str
    needles: tuple[bytes, ...]  # shapes a block must hold for the pattern to be worth running
    pattern: re.Pattern[str]
    valid: Callable[[str], bool]


def _nino(value: str) -> bool:
    """A UK National Insurance number: no checksum, so the allocation rules decide."""
    compact = value.replace(" ", "")
    prefix = compact[:2]
    return (
        prefix[0] not in "DFIQUV"
        and prefix[1] not in "DFIOQUV"
        and prefix not in ("BG", "GB", "KN", "NK", "NT", "TN", "ZZ")
    )


def _not_a_date(check: Callable[[str], bool]) -> Callable[[str], bool]:
    """Twelve or more digits that read as a date and time (202611250913) are a timestamp."""

    def valid(value: str) -> bool:
        digits = re.sub(r"\D", "", value)
        if re.fullmatch(r"(19|20)\d\d(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d*", digits):
            return False
        return check(value)

    return valid


def _id(
    region: str, name: str, needles: tuple[bytes, ...], pattern: str, valid: Callable[[str], bool]
) -> Detector:
    return Detector(
        kind=f"national_id:{region}.{name}",
        needles=needles,
        pattern=re.compile(_BEFORE + pattern + _AFTER),
        valid=valid,
    )


_DIGITS9 = (b"000-000-000",)
NATIONAL_IDS: dict[str, tuple[Detector, ...]] = {
    "US": (_id("US", "ssn", (b"000-00-0000",), r"\d{3}-\d{2}-\d{4}", ssn.is_valid),),
    "GB": (
        _id("GB", "nino", (b"AA00", b"AA-00"), r"[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]", _nino),
        _id(
            "GB",
            "nhs",
            (b"000-000-0000",),
            r"\d{3}[ -]\d{3}[ -]\d{4}",
            nhs.is_valid,
        ),
    ),
    "DE": (
        _id(
            "DE",
            "idnr",
            (b"00000000000", b"00-000-000-000"),
            r"\d{2} ?\d{3} ?\d{3} ?\d{3}",
            idnr.is_valid,
        ),
    ),
    "IN": (
        _id(
            "IN",
            "aadhaar",
            (b"000000000000", b"0000-0000-0000"),
            r"[2-9]\d{3}[ -]?\d{4}[ -]?\d{4}",
            _not_a_date(aadhaar.is_valid),
        ),
        _id("IN", "pan", (b"AAAAA0000A",), r"[A-Z]{5}\d{4}[A-Z]", pan.is_valid),
    ),
    "BR": (
        _id(
            "BR",
            "cpf",
            (b"000.000.000-00", b"00000000000"),
            r"\d{3}\.?\d{3}\.?\d{3}-?\d{2}",
            cpf.is_valid,
        ),
        _id(
            "BR",
            "cnpj",
            (b"00.000.000/0000-00", b"00000000000000"),
            r"\d{2}\.?\d{3}\.?\d{3}/?\d{4}-?\d{2}",
            _not_a_date(cnpj.is_valid),
        ),
    ),
    "ES": (
        _id("ES", "dni", (b"00000000A", b"00000000-A"), r"\d{8}-?[A-Z]", dni.is_valid),
        _id("ES", "nie", (b"A0000000A", b"A-0000000-A"), r"[XYZ]-?\d{7}-?[A-Z]", nie.is_valid),
    ),
    "FR": (
        _id(
            "FR",
            "nir",
            (b"0-00-00-00-000-000-00", b"000000000000000"),
            r"[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}",
            nir.is_valid,
        ),
    ),
    "IT": (
        _id(
            "IT",
            "codicefiscale",
            (b"AAAAAA00A00A000A",),
            r"[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]",
            codicefiscale.is_valid,
        ),
    ),
    "NL": (
        _id("NL", "bsn", (b"0000.00.000", b"000000000"), r"\d{4}\.?\d{2}\.?\d{3}", bsn.is_valid),
    ),
    "CA": (_id("CA", "sin", _DIGITS9, r"\d{3}[ -]\d{3}[ -]\d{3}", sin.is_valid),),
    "ZA": (_id("ZA", "idnr", (b"0000000000000",), r"\d{13}", za_idnr.is_valid),),
}

_CARD_PREFIXES = tuple(
    [
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
        "62",
        "60",
        "81",
    ]
)


def _card(value: str) -> bool:
    """Luhn-valid, a known issuer's prefix, and grouped or of a card's usual length."""
    digits = re.sub(r"[ -]", "", value)
    return (
        13 <= len(digits) <= 19
        and digits.startswith(_CARD_PREFIXES)
        and (digits != value or len(digits) in (15, 16))
        and luhn.is_valid(digits)
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


def _email(value: str) -> bool:
    return not value.rpartition("@")[2].lower().endswith(_RESERVED)


COMMON = (
    Detector(
        kind="card",
        needles=(b"0000000000000", b"0000-0000-0000"),
        pattern=re.compile(r"(?<![\w.:/-])\d(?:[ -]?\d){12,18}(?![\w.:/-])"),
        valid=_card,
    ),
    Detector(
        kind="iban",
        needles=(b"AA00",),
        pattern=re.compile(
            r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?"
            r"(?![A-Za-z0-9])"
        ),
        valid=iban.is_valid,
    ),
    Detector(
        kind="email",
        needles=(b"@",),
        pattern=re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
        valid=_email,
    ),
)


class PiiDetector:
    """Finds personal data in text; `regions` says whose phone numbers and national ids."""

    def __init__(self, regions: Sequence[str] = DEFAULT_REGIONS) -> None:
        self.regions = tuple(regions)
        self.detectors = (*COMMON, *(d for r in self.regions for d in NATIONAL_IDS.get(r, ())))
        needles = {n for d in self.detectors for n in d.needles} | set(phones.NEEDLES)
        needles |= set(_GATES)
        # Each needle with the shorter needles inside it: when one of those is absent from a
        # block, so is the needle, and the block need not be searched for it.
        self.within = {
            n: sorted((m for m in needles if m != n and m in n), key=len) for n in needles
        }

    def __reduce__(self) -> tuple[type[PiiDetector], tuple[tuple[str, ...]]]:
        return (PiiDetector, (self.regions,))

    def find(self, text: str) -> Iterator[tuple[str, str]]:
        """(kind, value) for every piece of personal data in `text`."""
        shape = text.encode().translate(_SHAPE)
        present: dict[bytes, bool] = {}

        def has(needle: bytes) -> bool:
            if needle not in present:
                present[needle] = all(has(m) for m in self.within[needle]) and needle in shape
            return present[needle]

        def holds(needles: tuple[bytes, ...]) -> bool:
            return any(has(needle) for needle in needles)

        seen: set[str] = set()
        for detector in self.detectors:
            if holds(detector.needles):
                for match in detector.pattern.finditer(text):
                    value = match.group(0)
                    if detector.valid(value):
                        seen.add(value)
                        yield detector.kind, value
        if holds(phones.NEEDLES):
            for value, region in phones.find(text, self.regions):
                if value not in seen:
                    yield f"phone:{region}", value


def known_regions() -> frozenset[str]:
    return frozenset(phonenumbers.SUPPORTED_REGIONS)


def parse_regions(raw: str) -> tuple[str, ...]:
    """`US,GB,DE` as region codes; `ValueError` names one that is not a region."""
    regions = tuple(part.strip().upper() for part in raw.split(",") if part.strip())
    unknown = [r for r in regions if r not in known_regions()]
    if unknown or not regions:
        raise ValueError(
            f"{unknown[0] if unknown else raw!r} is not a region code (use ISO 3166 codes such as "
            "US, GB, DE, IN, BR)"
        )
    return regions
