"""Masking rules: deterministic, keyed by a secret salt.

Every rule sees the value and its keyed digest, HMAC-SHA256(salt, value). The digest depends
only on the value, so the same value masks to the same output in every table and every run
with the same salt (joins on masked columns still join), and to something else entirely
with another salt. `fake` seeds Faker from the digest.
"""

from __future__ import annotations

import base64
import hmac
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from provisioning.shrink import documents
from provisioning.shrink.documents import Path, parse_path

Mask = Callable[[str, bytes], str | None]
_FAKE_KINDS = (
    "name",
    "first_name",
    "last_name",
    "email",
    "phone",
    "address",
    "city",
    "state",
    "postcode",
    "company",
    "user_name",
    "text",
    "ipv4",
    "iban",
    "ssn",
)
_COARSE_KINDS = ("city", "state", "postcode")
_local = threading.local()


def digest(salt: bytes, value: str) -> bytes:
    return hmac.new(salt, value.encode(), "sha256").digest()


def _seed(key: bytes) -> int:
    return int.from_bytes(key[:8], "big")


def _faker() -> Any:
    fake = getattr(_local, "faker", None)
    if fake is None:
        from faker import Faker

        fake = _local.faker = Faker("en_US")
    return fake


def _digits(key: bytes, count: int, offset: int = 8) -> str:
    return str(int.from_bytes(key[offset : offset + 8], "big") % 10**count).zfill(count)


class _Words:
    """Faker's own en_US word lists, loaded once; picks are indexed by the keyed digest."""

    _lists: dict[str, tuple[str, ...]] = {}

    @classmethod
    def pick(cls, name: str, key: bytes, offset: int) -> str:
        words = cls._lists.get(name)
        if words is None:
            from faker.providers.address.en_US import Provider as Address
            from faker.providers.company.en_US import Provider as Company
            from faker.providers.person.en_US import Provider as Person

            cls._lists.update(
                first=tuple(Person.first_names),
                last=tuple(Person.last_names),
                suffix=tuple(Address.street_suffixes),
                company=tuple(Company.company_suffixes),
            )
            words = cls._lists[name]
        return words[int.from_bytes(key[offset : offset + 4], "big") % len(words)]


def _fake(kind: str, unique: bool) -> Mask:
    if kind not in _FAKE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(_FAKE_KINDS)}, not {kind!r}")

    def mask(value: str, key: bytes) -> str:
        tag = key[8:13].hex()
        pick = _Words.pick
        if kind == "email":
            first, last = pick("first", key, 20).lower(), pick("last", key, 24).lower()
            # example.com is reserved: a masked address can never reach a real person.
            return f"{first}.{last}.{tag}@example.com"
        if kind == "phone":
            # 555 numbers are fictional in North America.
            area = f"{2 + key[16] % 8}{_digits(key, 2, 17)}"  # area codes start 2-9
            phone = f"+1-{area}-555-{_digits(key, 4)}"
            return f"{phone} ext. {_digits(key, 6, 20)}" if unique else phone
        if kind == "ssn":
            return f"900-{_digits(key, 2)}-{_digits(key, 4, 16)}"  # 9xx is never issued
        if kind == "postcode":
            return _digits(key, 5)
        if kind in ("first_name", "last_name", "name", "address", "company"):
            first, last = pick("first", key, 20), pick("last", key, 24)
            result = {
                "first_name": first,
                "last_name": last,
                "name": f"{first} {last}",
                "address": f"{1 + int(_digits(key, 5)) % 9999} {last} {pick('suffix', key, 28)}",
                "company": f"{last} {pick('company', key, 12)}",
            }[kind]
            return f"{result} {tag}" if unique else result
        fake = _faker()
        fake.seed_instance(_seed(key))
        method = {"text": "sentence"}.get(kind, kind)
        result = str(getattr(fake, method)())
        return f"{result} {tag}" if unique else result

    return mask


def _hash(length: int = 16) -> Mask:
    if not 4 <= length <= 64:
        raise ValueError("length must be from 4 to 64")
    return lambda value, key: key.hex()[:length]


def _partial(keep: int = 4, char: str = "*") -> Mask:
    if keep < 0 or len(char) != 1:
        raise ValueError("keep must be 0 or more and char one character")

    def mask(value: str, key: bytes) -> str:
        shown = value[-keep:] if keep and len(value) > keep else ""
        return char * (len(value) - len(shown)) + shown

    return mask


def _null() -> Mask:
    return lambda value, key: None


def _constant(value: str) -> Mask:
    text = str(value)
    return lambda _value, key: text


def _date_shift(days: int = 30) -> Mask:
    if days < 1:
        raise ValueError("days must be at least 1")

    def mask(value: str, key: bytes) -> str:
        offset = int.from_bytes(key[:4], "big") % (2 * days) - days
        offset = offset if offset < 0 else offset + 1  # never 0: every date moves
        try:
            shifted = date.fromisoformat(value[:10]) + timedelta(days=offset)
        except ValueError:
            return value if value in ("infinity", "-infinity") else mask_error(value)
        return shifted.isoformat() + value[10:]

    return mask


def _noise(ratio: float = 0.1) -> Mask:
    if not 0 < ratio < 1:
        raise ValueError("ratio must be between 0 and 1")

    def mask(value: str, key: bytes) -> str:
        try:
            number = Decimal(value)
        except InvalidOperation:
            return mask_error(value)
        factor = Decimal(int.from_bytes(key[:4], "big")) / Decimal(2**32)  # [0, 1)
        scaled = number * (1 + Decimal(ratio) * (2 * factor - 1))
        exponent = number.as_tuple().exponent
        return str(scaled.quantize(Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)))

    return mask


def _regex(pattern: str, replace: str) -> Mask:
    compiled = re.compile(pattern)
    return lambda value, key: compiled.sub(replace, value)


def _keep() -> Mask:
    return lambda value, key: value


def json_paths(paths: Any) -> list[tuple[Path, Rule]]:
    """A `json` rule's paths, each with the rule for what it reaches; `ValueError` if malformed."""
    if not isinstance(paths, dict) or not paths:
        raise ValueError(
            "paths must map json paths to rules, as in {$.contact.email: {rule: hash}}"
        )
    parsed = []
    for text, raw in paths.items():
        path = parse_path(text)
        spec = {"rule": raw} if isinstance(raw, str) else raw
        if not isinstance(spec, dict) or "rule" not in spec:
            raise ValueError(f"{text}: give a rule, as in {{rule: fake, kind: email}}")
        params = dict(spec)
        name = params.pop("rule")
        if name not in RULES or name == "json":
            raise ValueError(f"{text}: unknown rule {name!r} inside a json rule")
        parsed.append((path, build_rule(name, params)))
    return parsed


def mask_leaves(value: Any, inner: Mask, salt: bytes, *, keys: bool = False) -> Any:
    """Mask every scalar under `value` (a document's node, or a DynamoDB attribute: maps,
    lists, sets and binary too), each keyed by its own digest, so the same value masks the
    same inside a document as in a column; with `keys`, a map's keys too. Numbers stay
    numbers where the mask gives a plain number."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, dict):
        return {
            (_masked_key(k, inner, salt) if keys else k): mask_leaves(v, inner, salt, keys=keys)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_leaves(v, inner, salt, keys=keys) for v in value]
    if isinstance(value, set | frozenset):
        masked_set = {m for v in value if (m := mask_leaves(v, inner, salt)) is not None}
        if len({type(m) for m in masked_set}) > 1:  # a set holds one type: numbers become text
            masked_set = {str(m) for m in masked_set}
        return masked_set or None  # an empty set is no value
    if isinstance(value, bytes | bytearray):
        text = base64.b64encode(value).decode()
        masked_bytes = inner(text, digest(salt, text))
        return None if masked_bytes is None else masked_bytes.encode()
    text = str(value)
    masked = inner(text, digest(salt, text))
    if masked is not None and not isinstance(value, str) and _PLAIN_NUMBER.fullmatch(masked):
        try:
            return Decimal(masked)
        except InvalidOperation:
            return masked
    return masked


_PLAIN_NUMBER = re.compile(r"-?\d{1,38}(\.\d{1,38})?")  # not a hash's digits like 9e5894


def _masked_key(key: str, inner: Mask, salt: bytes) -> str:
    """A map's key masked like a value; where the rule gives none, the key's digest."""
    masked = inner(key, digest(salt, key))
    return digest(salt, key).hex()[:16] if masked is None else masked


def mask_document(paths: Any, salt: bytes) -> Callable[[Any], Any]:
    """A `json` rule over a parsed document (or a DynamoDB map): what each path reaches is
    masked by that path's rule; what no path names is kept."""
    compiled = [(path, rule.masker(salt=salt)) for path, rule in json_paths(paths)]

    def mask(document: Any) -> Any:
        for path, inner in compiled:

            def visit(node: Any, inner: Mask = inner) -> Any:
                return mask_leaves(node, inner, salt)

            document = documents.apply(document, path, visit)
        return document

    return mask


def _json(paths: Any, salt: bytes = b"") -> Mask:
    masker = mask_document(paths, salt)

    def mask(value: str, key: bytes) -> str:
        try:
            document = documents.loads(value)
        except ValueError:
            return mask_error(value)
        return documents.dumps(masker(document))

    return mask


def mask_error(value: str) -> str:
    raise ValueError(f"cannot mask a value of this shape ({len(value)} characters)")


RULES: dict[str, Callable[..., Mask]] = {
    "fake": _fake,
    "hash": _hash,
    "partial": _partial,
    "null": _null,
    "constant": _constant,
    "date_shift": _date_shift,
    "noise": _noise,
    "regex": _regex,
    "keep": _keep,
    "json": _json,
}


@dataclass(frozen=True)
class Rule:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def masker(self, *, unique: bool = False, salt: bytes = b"") -> Mask:
        """The function applying this rule; `unique` columns get outputs that stay unique.
        `salt` keys the rules inside a `json` rule, which mask values of their own."""
        if self.name == "fake":
            return _fake(
                str(self.params.get("kind", "")), unique or bool(self.params.get("unique"))
            )
        if self.name == "json":
            return _json(self.params.get("paths"), salt)
        return RULES[self.name](**self.params)

    @property
    def identifying(self) -> bool:
        """False for rules over values too common to call a copy when seen elsewhere: a
        region named like a city, a date, an amount."""
        if self.name in ("date_shift", "noise"):
            return False
        return not (self.name == "fake" and self.params.get("kind") in _COARSE_KINDS)

    @property
    def generates(self) -> bool:
        """True when the output is made up rather than derived from the input's text."""
        return self.name in ("fake", "hash", "null", "constant", "date_shift", "noise")


def build_rule(name: str, params: dict[str, Any]) -> Rule:
    """Validate a rule's parameters by building it once."""
    rule = Rule(name, params)
    rule.masker()
    return rule
