"""Masking rules, PII detectors and the COPY text codec, without a database."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from provisioning.errors import InvalidInput
from provisioning.shrink.catalog import JSON, TEXT
from provisioning.shrink.copytext import decode, encode
from provisioning.shrink.detect import DEFAULT_REGIONS, PiiDetector
from provisioning.shrink.rewrite import TablePlan, lines, process, split_spans
from provisioning.shrink.rules import Rule, digest
from provisioning.shrink.scan import Findings, redact
from tests.conftest import Configured

SALT = b"unit-salt"
DETECT = PiiDetector()


def apply(rule: Rule, value: str, salt: bytes = SALT, unique: bool = False) -> str | None:
    return rule.masker(unique=unique)(value, digest(salt, value))


def test_fake_values_are_deterministic_keyed_and_shaped() -> None:
    email = Rule("fake", {"kind": "email"})
    first = apply(email, "maria@real-mail.com")
    assert first == apply(email, "maria@real-mail.com")
    assert first != apply(email, "maria@real-mail.com", salt=b"other")
    assert first != apply(email, "joao@real-mail.com")
    assert re.fullmatch(r"[a-z]+\.[a-z]+\.[0-9a-f]{10}@example\.com", first or "")
    phone = apply(Rule("fake", {"kind": "phone"}), "+55 11 5555 1234")
    assert re.fullmatch(r"\+1-[2-9]\d\d-555-\d{4}", phone or "")
    assert apply(Rule("fake", {"kind": "name"}), "Ana", unique=True) != apply(
        Rule("fake", {"kind": "name"}), "Ana"
    )
    ssn = apply(Rule("fake", {"kind": "ssn"}), "123-45-6789")
    assert ssn and ssn.startswith("900-") and not list(DETECT.find(ssn))


def test_other_rules() -> None:
    assert apply(Rule("partial", {"keep": 4}), "4111 1111 1111 1111") == "*" * 15 + "1111"
    assert apply(Rule("partial", {"keep": 4}), "123") == "***"
    assert apply(Rule("hash", {"length": 8}), "x") == digest(SALT, "x").hex()[:8]
    assert apply(Rule("null"), "x") is None
    assert apply(Rule("constant", {"value": "REDACTED"}), "x") == "REDACTED"
    assert apply(Rule("regex", {"pattern": r"\d", "replace": "#"}), "a1b22") == "a#b##"
    assert apply(Rule("keep"), "same") == "same"
    shifted = apply(Rule("date_shift", {"days": 10}), "2024-02-29 13:45:00+00")
    assert shifted and shifted != "2024-02-29 13:45:00+00" and shifted.endswith(" 13:45:00+00")
    assert shifted == apply(Rule("date_shift", {"days": 10}), "2024-02-29 13:45:00+00")
    noisy = apply(Rule("noise", {"ratio": 0.1}), "100.00")
    assert noisy and re.fullmatch(r"\d+\.\d\d", noisy) and 90 <= float(noisy) <= 110
    assert apply(Rule("noise", {"ratio": 0.5}), "42") == apply(Rule("noise", {"ratio": 0.5}), "42")
    with pytest.raises(ValueError):
        apply(Rule("noise", {"ratio": 0.1}), "not a number")


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("ssn 536-22-8726", ["national_id:US.ssn"]),
        ("ssn 000-45-6789 and 900-12-3456", []),
        ("pay 4111 1111 1111 1111 now", ["card"]),
        ("pay 4111111111111111", ["card"]),
        ("pay 4111 1111 1111 1112", []),  # fails Luhn
        ("at 2026-11-23 15:45:59.118697+00", []),
        ("order 20261123154559118697", []),  # a long id, not a card
        ("digest 9f4111111111111111a0", []),  # digits inside a word
        ("call (415) 867-5309", ["phone:US"]),
        ("call +14158675309", ["phone:US"]),
        ("fictional 555-0100 and +1-212-555-0142", []),
        ("mail ana@gmail.com", ["email"]),
        ("mail ana@example.com or bo@corp.test", []),
        ("iban GB82 WEST 1234 5698 7654 32", ["iban"]),
        ("iban GB82 WEST 1234 5698 7654 33", []),
        ("ip 10.12.84.156", []),
    ],
)
def test_detectors(text: str, kinds: list[str]) -> None:
    assert sorted(kind for kind, _ in DETECT.find(text)) == kinds


def test_findings_redact_and_allow() -> None:
    assert redact("123-45-6789") == "***-**-6789"
    findings = Findings([re.compile(r"\(415\) 867-5309")])
    findings.add("t", "c", "phone:US", "(415) 867-5309")
    findings.add("t", "c", "ssn", "123-45-6789")
    findings.add("t", "c", "ssn", "123-45-6780")
    [only] = findings.report()
    assert only.line() == "t.c: 2 ssn value(s), e.g. ***-**-6789"


def test_copy_text_round_trip() -> None:
    for value in [None, "", "plain", "tab\there", "line\nbreak", "back\\slash", "\r\x0b\x08"]:
        assert decode(encode(value)) == value
    assert decode("\\N") is None
    assert decode("\\101\\x42") == "AB"


def test_data_file_lines_split_only_on_newlines(tmp_path: Path) -> None:
    rows = ["a\tb", "", "x\u2028y\x1cz", "é" * 3000] * 3000
    path = tmp_path / "1.dat"
    path.write_text("\n".join(rows) + "\n\\.\n\n\n")
    whole = list(lines(path))
    assert whole == [*rows, "\\.", "", ""]
    for parts in (1, 2, 3, 7):
        assert [line for span in split_spans(path, parts) for line in lines(path, span)] == whole


def test_whole_files_are_checked_in_blocks_and_suspect_blocks_row_by_row(tmp_path: Path) -> None:
    clean = [f'{i}\tpage_view\t{{"path": "/app/{i % 7}", "ms": {i % 900}}}' for i in range(60000)]
    planted = {
        1000: '1000\tlogin\t{"who": "jane\\\\u0040roe.com"}',  # an escape hides the @
        30000: '30000\tlogin\t{"who": "Maria Kowalski"}',  # a copy of a pii value
        59000: "59000\tcall 212-867-5309\t{}",
    }
    rows = [planted.get(i, row) for i, row in enumerate(clean)]
    path = tmp_path / "5.dat"
    text = "\n".join(rows) + "\n\\.\n\n"
    path.write_text(text)
    plan = TablePlan(
        name="app.events",
        relation="app.events",
        path=path,
        columns=("id", "kind", "payload"),
        scans={1: TEXT, 2: JSON},
    )
    assert plan.only_scanned
    kept, findings, refs = process(
        plan, SALT, {"Maria Kowalski", "nobody@real.example"}, [], DETECT
    )
    assert kept == 60000 and refs == []
    assert [f.line() for f in findings.report()] == [
        "app.events.kind: 1 phone:US value(s), e.g. ***-***-5309",
        "app.events.payload: 1 email value(s), e.g. ****@***.com",
        "app.events.payload: 1 value copied from a pii column value(s), e.g. ***** ****lski",
    ]
    assert gzip.decompress((tmp_path / "5.dat.gz").read_bytes()).decode() == text
    assert not path.exists()


# Per region: values that are personal data (with the kind each must be reported as), and
# lookalikes whose checksum or structure fails, which must pass.
WORLD: dict[str, tuple[dict[str, str], list[str]]] = {
    "US": (
        {
            "(415) 867-5309": "phone:US",
            "+1 415 867 5309": "phone:US",
            "536-22-8726": "national_id:US.ssn",
        },
        ["666-22-8726", "536-00-8726"],
    ),
    "GB": (
        {
            "020 7946 0958": "phone:GB",
            "+44 20 7946 0958": "phone:GB",
            "AB 12 34 56 C": "national_id:GB.nino",
            "401 023 2137": "national_id:GB.nhs",
        },
        ["DA 12 34 56 C", "401 023 2138"],
    ),
    "DE": (
        {
            "030-0074321": "phone:DE",
            "+49 30 901820": "phone:DE",
            "36 574 261 809": "national_id:DE.idnr",
        },
        ["36 574 261 808", "36574261808"],
    ),
    "IN": (
        {
            "098765 43210": "phone:IN",
            "+91 98765 43210": "phone:IN",
            "2345 6789 0124": "national_id:IN.aadhaar",
            "AAPPL1234C": "national_id:IN.pan",
        },
        ["2345 6789 0125", "AAPDL1234C", "202611250913"],
    ),
    "BR": (
        {
            "(11) 91234-5678": "phone:BR",
            "+55 11 91234-5678": "phone:BR",
            "390.533.447-05": "national_id:BR.cpf",
            "11.222.333/0001-81": "national_id:BR.cnpj",
        },
        ["390.533.447-06", "11.222.333/0001-82"],
    ),
}


@pytest.mark.parametrize("region", sorted(WORLD))
def test_each_regions_phones_and_ids_are_found_and_lookalikes_pass(region: str) -> None:
    found, lookalikes = WORLD[region]
    detect = PiiDetector([region])
    for value, kind in found.items():
        for text in (f"note: {value}.", f'{{"contact": "{value}"}}', f'{{x,"{value}"}}'):
            assert [k for k, _ in detect.find(text)] == [kind], (region, text)
    for value in lookalikes:
        assert list(PiiDetector().find(f"ref {value} ok")) == [], (region, value)


def test_regions_are_a_setting(tmp_path: Path, configured: Configured) -> None:
    settings = configured({"DEVDB_HOME": str(tmp_path), "DEVDB_PII_REGIONS": "in, br"})
    assert settings.pii_regions == ("IN", "BR")
    assert configured({"DEVDB_HOME": str(tmp_path)}).pii_regions == DEFAULT_REGIONS
    with pytest.raises(InvalidInput, match="DEVDB_PII_REGIONS: 'XX' is not a region code"):
        configured({"DEVDB_HOME": str(tmp_path), "DEVDB_PII_REGIONS": "US,XX"})
    # Only the configured regions' national formats and ids; international ones always.
    us_only = PiiDetector(["US"])
    assert list(us_only.find("ruf 030-0074321 an")) == []
    assert [k for k, _ in us_only.find("ruf +49 30 901820 an")] == ["phone:DE"]
    assert list(us_only.find("cpf 390.533.447-05")) == []
