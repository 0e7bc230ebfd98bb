"""How devdb reads a setting: `DEVDB_<KEY>` from the environment, else `<key>` in devdb.toml,
else the default written beside the setting's declaration. pydantic-settings merges the
sources and pydantic checks the values; this module holds what devdb adds: the names, the
config file's place and rules, the kinds of value people write ("4h", "a, b",
"54330-54999") and one sentence for a bad one.

A setting's key is its field's name unless its declaration gives another (`setting(key=
"s3_bucket")`); its variable is `DEVDB_<KEY>` unless the declaration names one
(`SLACK_BOT_TOKEN`). Secrets and places come from the environment only: such a key in
devdb.toml is refused, as is a key devdb does not know. An empty value is an unset one.

Only `load()` reads the environment and the file: a settings object built with arguments
(a test's, a benchmark's) holds those arguments and the defaults, nothing else.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field, JsonValue, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from provisioning.durations import parse_duration
from provisioning.errors import InvalidInput

# While `load()` runs: what devdb.toml holds, read once for every group of settings.
_loading: ContextVar[dict[str, dict[str, Any]] | None] = ContextVar("loading", default=None)


def setting(
    default: Any = None,
    *,
    key: str | None = None,
    env: str | None = None,
    env_only: bool = False,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A setting's declaration, when its key or variable is not the field's own name, or it
    is read from the environment only (a secret, or a place)."""
    extra: dict[str, JsonValue] = {}
    if key:
        extra["key"] = key
    if env:
        extra["env"] = env
    if env_only:
        extra["env_only"] = True
    if default_factory is not None:
        return Field(default_factory=default_factory, json_schema_extra=extra)
    return Field(default, json_schema_extra=extra)


def _extra(field: FieldInfo) -> dict[str, Any]:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def file_key(name: str, field: FieldInfo) -> str:
    return str(_extra(field).get("key") or name)


def env_name(name: str, field: FieldInfo) -> str:
    return str(_extra(field).get("env") or f"DEVDB_{file_key(name, field).upper()}")


def _is_group(field: FieldInfo) -> bool:
    """A nested group of settings (`Settings.aws`), read by its own class."""
    kind = field.annotation
    return isinstance(kind, type) and issubclass(kind, DevdbSettings)


def _settings(cls: type[BaseSettings]) -> Iterator[tuple[str, FieldInfo]]:
    return ((n, f) for n, f in cls.model_fields.items() if not _is_group(f))


def default_home() -> Path:
    if os.geteuid() == 0:
        # root's home is usually private (0700), so the unprivileged account that runs the
        # PostgreSQL servers could not enter it: keep state where system services keep theirs.
        return Path("/var/lib/devdb")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "devdb"


def config_path() -> Path:
    """`DEVDB_CONFIG`, else devdb.toml in `DEVDB_HOME` (or the default home)."""
    if named := os.environ.get("DEVDB_CONFIG"):
        return Path(named).expanduser()
    return Path(os.environ.get("DEVDB_HOME") or default_home()).expanduser() / "devdb.toml"


class Environment(PydanticBaseSettingsSource):
    """Each setting's variable, exactly as documented; an empty one is unset."""

    def __call__(self) -> dict[str, Any]:
        found = {
            name: os.environ.get(env_name(name, f)) for name, f in _settings(self.settings_cls)
        }
        return {name: value for name, value in found.items() if value}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads them all at once


class ConfigFile(PydanticBaseSettingsSource):
    """devdb.toml: read and checked once per `load()`, each group taking its own keys."""

    def __call__(self) -> dict[str, Any]:
        loading = _loading.get()
        assert loading is not None
        if "file" not in loading:
            loading["file"] = _read_config(config_path())
        ours = dict(_settings(self.settings_cls))
        return {key: value for key, value in loading["file"].items() if key in ours}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the whole file at once


def _read_config(path: Path) -> dict[str, Any]:
    """The file's settings by field name; unknown keys and secrets refused, empty ones unset."""
    if not path.is_file():
        return {}
    try:
        values = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not valid TOML: {exc}.") from exc
    known = {
        file_key(name, field): (name, field)
        for cls in DevdbSettings.__subclasses__()
        for name, field in _settings(cls)
    }
    found: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise InvalidInput(f"{path} has a setting devdb does not know: {key[:40]!r}.")
        name, field = known[key]
        if _extra(field).get("env_only"):
            raise InvalidInput(
                f"{path} may not hold {key!r}: set {env_name(name, field)} in the "
                "environment instead (secrets and places stay out of files)."
            )
        if value != "":
            found[name] = value
    return found


class DevdbSettings(BaseSettings):
    """A group of devdb's settings: the environment first, then devdb.toml, then defaults
    (when read by `load()`; built with arguments, only those and the defaults)."""

    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(frozen=True, extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _loading.get() is None:
            return (init_settings,)
        return init_settings, Environment(settings_cls), ConfigFile(settings_cls)


Loaded = TypeVar("Loaded", bound=DevdbSettings)


def load(cls: type[Loaded]) -> Loaded:
    """Read the settings; a bad value is one sentence naming its variable."""
    token = _loading.set({})
    try:
        return cls()
    except ValidationError as exc:
        raise InvalidInput(explain(exc)) from None
    finally:
        _loading.reset(token)


def explain(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = str(error["loc"][0]) if error["loc"] else ""
    names = {
        name: env_name(name, field)
        for cls in DevdbSettings.__subclasses__()
        if cls.__name__ == exc.title
        for name, field in _settings(cls)
    }
    variable = names.get(where, where.upper())
    message = str(error["msg"])
    if message.startswith("Value error, "):  # devdb's own sentence, which shows the value
        message = message.removeprefix("Value error, ").rstrip(".")
        if message.startswith(variable):
            return message + "."
        return (
            f"{variable} {message}." if message.startswith("must ") else f"{variable}: {message}."
        )
    shown = str(error.get("input", ""))[:40]
    return f"{variable}: {message[0].lower()}{message[1:]} (not {shown!r})."


# --- The kinds of value people write. --------------------------------------------------

Value = TypeVar("Value")


def parsed(parse: Callable[[str], Value]) -> BeforeValidator:
    """Parse text as people write it; a number TOML typed is checked like the same digits,
    other values TOML typed (lists, tables, booleans) pass through."""

    def check(value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            return value
        try:
            return parse(value.strip())
        except InvalidInput as exc:
            raise ValueError(str(exc).rstrip(".")) from None

    return BeforeValidator(check)


def whole_number(raw: str, low: int, high: int | None = None, what: str = "a whole number") -> int:
    """`raw` as a whole number from `low` (to `high`); ValueError says what is wanted."""
    if (
        not (raw.isascii() and raw.isdigit())
        or int(raw) < low
        or (high is not None and int(raw) > high)
    ):
        upto = f" from {low} to {high}" if high is not None else f" of at least {low}"
        raise ValueError(f"must be {what}{upto}, not {raw[:20]!r}")
    return int(raw)


def words(raw: str) -> tuple[str, ...]:
    """`a, b,c` → ("a", "b", "c")."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _duration(raw: str) -> timedelta:
    try:
        return parse_duration(raw)
    except InvalidInput:
        raise ValueError(f"must be a duration like 30m, 4h or 2d, not {raw[:20]!r}") from None


def _port_range(raw: str) -> tuple[int, int]:
    low, sep, high = raw.partition("-")
    try:
        start, end = int(low), int(high)
    except ValueError:
        start = end = 0
    if not sep or not 1024 <= start <= end <= 65535:
        raise ValueError(f"must look like 54330-54999, not {raw[:20]!r}")
    return start, end


def _network(raw: str) -> str:
    try:
        return str(ipaddress.ip_network(raw, strict=False))
    except ValueError:
        raise ValueError(f"must be a network like 10.0.0.0/16, not {raw[:40]!r}") from None


def _dollars(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"must be an amount in dollars, like 250, not {raw[:20]!r}") from None


def whole(low: int, high: int | None = None) -> BeforeValidator:
    """A whole number in a range, for an `Annotated[int, ...]` setting."""
    return parsed(lambda raw: whole_number(raw, low, high))


Duration = Annotated[timedelta, parsed(_duration)]
Place = Annotated[Path, AfterValidator(Path.expanduser)]  # `~/x` as the shell would
Count = Annotated[int, whole(1)]  # one or more
Words = Annotated[tuple[str, ...], NoDecode, parsed(words)]
Names = Annotated[frozenset[str], NoDecode, parsed(lambda raw: frozenset(words(raw)))]
PortRange = Annotated[tuple[int, int], NoDecode, parsed(_port_range)]
Network = Annotated[str, parsed(_network)]
Dollars = Annotated[float, parsed(_dollars)]
