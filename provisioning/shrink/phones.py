"""Phone numbers in text, validated against libphonenumber's metadata for each region.

A candidate is any run of digits written the way phone numbers are (with a `+`, or with
spaces, dots, dashes or parentheses between groups), not a date, an IP address or an
amount. It counts when phonenumbers finds it a valid number of one of the configured
regions (or, with a `+`, of any region) *and* its digits are grouped the way that region
writes them: many numbering plans (Germany's) accept nearly any run of digits, but not in
any grouping, and that keeps ids whose checksum failed from passing as phones.

Most candidates are ruled out before phonenumbers parses them, by the region's own patterns
for valid national numbers compiled into one regular expression: parsing is the slow part.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache, lru_cache

import phonenumbers
from phonenumbers import Leniency, PhoneNumberFormat

# Shapes (see `detect`: a space, a dash or a parenthesis is "-") a block must hold: a
# country code, or a group of three digits then one of four, apart (dates, times and IP
# addresses have neither).
NEEDLES = (b"+0-", b"+00-", b"+000", b"000-0000", b"000.0000")
CANDIDATE = re.compile(
    r"(?<![\w+.:/-])"
    r"(?!\d{4}[-./]\d{1,2}[-./]\d{1,2}(?!\d))"  # 2026-11-25
    r"(?!\d{1,2}[-./]\d{1,2}[-./]\d{2,4}(?!\d))"  # 25.11.2026
    r"(?!\d{1,3}(?:\.\d{1,3}){3}(?!\d))"  # 10.1.2.3
    r"(?:\+|\(\d)?\d[\d ().-]{5,22}\d"
    r"(?!\w|[.:/-]\w)"
)
# 12345.17 and 1.234.567 are amounts, whatever some numbering plan would accept.
_AMOUNT = re.compile(r"\d+\.\d{1,2}|\d{1,3}(?:[. ]\d{3})+(?:\.\d{1,2})?")
_DOUBLED = re.compile(r"[ .-]{2}|\)\(|\(\)")
# 555 numbers are fictional in North America, and what devdb masks phone numbers to.
_FICTIONAL = re.compile(r"(?:\+?1[ .-]?)?\(?[2-9]\d\d\)?[ .-]?555[ .-]?\d{4}(?!\d)")
_STRICT = Leniency.STRICT_GROUPING
_TYPES = (
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "personal_number",
    "voip",
    "pager",
    "uan",
    "voicemail",
)


def find(text: str, regions: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(number as written, region) for every valid phone number in `text`."""
    for match in CANDIDATE.finditer(text):
        value = match.group(0)
        region = region_of(value, regions)
        if region:
            yield value, region


@cache
def _valid_national(region: str) -> tuple[re.Pattern[str], str]:
    """One pattern for every valid national number of a region, and its national prefix."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    patterns = [
        desc.national_number_pattern
        for kind in _TYPES
        if meta is not None
        and (desc := getattr(meta, kind, None)) is not None
        and desc.national_number_pattern
    ]
    if not patterns:
        return re.compile(r"\d+"), ""
    assert meta is not None
    return re.compile("|".join(f"(?:{p})" for p in patterns)), (meta.national_prefix or "")


def _possible(digits: str, region: str) -> bool:
    pattern, prefix = _valid_national(region)
    if pattern.fullmatch(digits):
        return True
    return (
        bool(prefix)
        and digits.startswith(prefix)
        and bool(pattern.fullmatch(digits[len(prefix) :]))
    )


def _significant(number: phonenumbers.PhoneNumber) -> str:
    zeros = "0" * (number.number_of_leading_zeros or 1) if number.italian_leading_zero else ""
    return zeros + str(number.national_number)


def _cuts(text: str) -> tuple[str, set[int]]:
    """The digits, and where the groups break, counted from the right."""
    groups = re.findall(r"\d+", text)
    cuts, length = set(), 0
    for group in reversed(groups[1:]):
        length += len(group)
        cuts.add(length)
    return "".join(groups), cuts


def _grouped(written: str, number: phonenumbers.PhoneNumber, region: str | None) -> bool:
    """Whether the number is written in groups that its region's own format has (fewer
    breaks are fine: `+4930901820`; a break where the format has none is not)."""
    style = PhoneNumberFormat.INTERNATIONAL if region is None else PhoneNumberFormat.NATIONAL
    digits, cuts = _cuts(written)
    expected, allowed = _cuts(phonenumbers.format_number(number, style))
    if not (expected.endswith(digits) or digits.endswith(expected)):
        return False
    if not {c for c in cuts if c < min(len(digits), len(expected))} <= allowed:
        return False
    if region is not None and len(expected) > len(digits):
        # Written without the national prefix its format shows: phonenumbers' own strict
        # check knows whether that region may leave it out (Brazil's 0900 may not).
        matches = phonenumbers.PhoneNumberMatcher(written, region, leniency=_STRICT)
        return any(True for _ in matches)
    return True


@lru_cache(maxsize=100_000)
def region_of(candidate: str, regions: tuple[str, ...]) -> str | None:
    """The region in whose numbering plan `candidate` is a valid, well-grouped number."""
    count = sum(ch.isdigit() for ch in candidate)
    international = candidate[0] == "+"
    formatted = international or any(ch in candidate for ch in " ().-")
    if not 7 <= count <= 15 or not formatted or _DOUBLED.search(candidate):
        return None
    if _FICTIONAL.match(candidate) or (not international and _AMOUNT.fullmatch(candidate)):
        return None
    digits = re.sub(r"\D", "", candidate)
    for region in (None,) if international else regions:
        if region is not None and not _possible(digits, region):
            continue
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if region is None:
            valid = phonenumbers.is_valid_number(number)
        else:  # the same test as is_valid_number_for_region, with the patterns compiled once
            valid = bool(_valid_national(region)[0].fullmatch(_significant(number)))
        if valid and _grouped(candidate, number, region):
            return region or phonenumbers.region_code_for_number(number)
    return None
