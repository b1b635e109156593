"""Settings: one TOML file, validated at start-up into frozen objects.

Every mistake in the file gives one line naming the file, the key and what is expected
(``icm.toml: routing.sources[1]: unknown source 'amocrn' (expected one of: icmdb)``),
collected in a :class:`ConfigError`; the CLI prints them and exits with code 2. Each part of
the daemon receives only its own section (``AmiSettings``, ``RoutingSettings``, ...).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from icm.config_errors import ConfigError, format_errors, printable
from icm.numbers import NumberError, Numbers, is_digits
from icm.rules_config import DEPUTY_WHEN, PREFIX, DeputyWhen, Hours, Leave, Ranges, RulesSettings
from icm.secrets import SecretRef, WithSecrets, read_secrets
from icm.sources import SourceSettings, installed_sources
from icm.store import Store, is_shared, open_store

EXTENSION = re.compile(r"^[0-9]{1,10}\Z")  # \Z: "$" would let "101\n" through
EXTENSION_RANGE = re.compile(r"^([0-9]{1,10})-([0-9]{1,10})\Z")
# Dial strings end up inside Dial(...): no argument separators, quotes or substitutions.
_DIAL_TEMPLATE = re.compile(r"^[A-Za-z0-9/_@.:+#*{}\-]+$")
_STORE_SCHEMES = ("sqlite", "redis", "rediss", "unix", "redis+sentinel")
_SECRET_KEYS = (
    "secret",
    "token",
    "password",
    "client_secret",
    "webhook",
    "api_key",
    "access_token",
    "refresh_token",
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HTTP_KEY = re.compile(r"[A-Za-z0-9._~\-]{16,128}")
_KERNEL_FILE_SYSTEMS = ("proc", "sys", "dev")
MAX_CONFIG_BYTES = 1024 * 1024  # a configuration file is a few KiB


def _known_source(name: str) -> str:
    known = installed_sources()
    if name not in known:
        raise ValueError(f"unknown source {name!r} (expected one of: {', '.join(sorted(known))})")
    return name


def _extension_or_range(item: str) -> str:
    match = EXTENSION_RANGE.match(item)
    if not (EXTENSION.match(item) or (match and int(match[1]) <= int(match[2]))):
        raise ValueError(f"{item!r} is not an extension or a range like '100-199'")
    return item


SourceName = Annotated[str, AfterValidator(_known_source)]
ExtensionOrRange = Annotated[str, AfterValidator(_extension_or_range)]


class _Section(WithSecrets):
    """One section of the file: frozen, strict, unknown keys refused."""

    # strict: TOML has real types; "yes" is not a boolean and "1500" is not a number.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class AmiSettings(_Section):
    """``[ami]``: where Asterisk's manager interface is and how ICM logs in."""

    host: str = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    username: str = Field(default="icm", min_length=1)
    secret: SecretRef = SecretRef(env="ICM_AMI_SECRET")
    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    action_timeout_s: float = Field(default=2.0, gt=0, le=60)
    keepalive_s: float = Field(default=5.0, gt=0, le=300)
    keepalive_timeout_s: float = Field(default=3.0, gt=0, le=60)
    reconnect_max_s: float = Field(default=30.0, ge=0.1, le=600)

    def secrets(self) -> dict[str, str]:
        return {"secret": "the AMI secret"}

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if len(host) > 253 or not _HOSTNAME.fullmatch(host):
                raise ValueError(
                    f"{host!r} is not a host name or IP address (expected e.g. 127.0.0.1)"
                ) from None
        return host


class RoutingSettings(_Section):
    """``[routing]``: the reference product's settings, the budget and the sources' order."""

    country: str = Field(default="RU", pattern=r"^[A-Za-z]{2}$")
    area_code: str = Field(default="", pattern=r"^[0-9]{0,5}$")
    sources: list[SourceName] = ["icmdb"]
    exceptions: list[str] = []
    ring_mobiles: bool = False
    default_number: str = ""
    lookup_budget_ms: int = Field(default=1500, ge=100, le=10_000)
    lookup: Literal["chain", "parallel"] = "chain"
    dial_timeout_s: int = Field(default=20, ge=1, le=600)
    extensions: list[ExtensionOrRange] = []

    @field_validator("sources")
    @classmethod
    def _once_each(cls, sources: list[str]) -> list[str]:
        if len(set(sources)) != len(sources):
            raise ValueError("a source is listed twice (expected each source once)")
        return sources


class DialSettings(_Section):
    """``[dial]``: the templates of the Dial() strings ICM answers with."""

    # PJSIP first: chan_sip is gone from Asterisk 21 on ("SIP/{ext}", "SIP/trunk/{number}").
    extension: str = "PJSIP/{ext}"
    external: str = "PJSIP/{number}@trunk"
    default: str = ""

    @field_validator("extension", "external", "default")
    @classmethod
    def _safe_template(cls, template: str) -> str:
        if template and not _DIAL_TEMPLATE.match(template):
            raise ValueError(
                f"{template!r} has characters a Dial() string cannot hold "
                "(expected letters, digits and / _ @ . : + # * - with {placeholders})"
            )
        return template

    @field_validator("extension")
    @classmethod
    def _has_ext(cls, template: str) -> str:
        if "{ext}" not in template:
            raise ValueError(f"{template!r} lacks {{ext}} (expected e.g. 'PJSIP/{{ext}}')")
        return template

    @field_validator("external", "default")
    @classmethod
    def _has_number(cls, template: str) -> str:
        if template and not any(p in template for p in ("{number}", "{e164}", "{national}")):
            raise ValueError(
                f"{template!r} lacks {{number}}, {{e164}} or {{national}} "
                "(expected e.g. 'PJSIP/{number}@trunk')"
            )
        return template


def _email(value: str) -> str:
    if value and not _EMAIL.match(value):
        raise ValueError(f"{value!r} is not an e-mail address (expected e.g. 'anna@example.com')")
    return value.lower()


class ManagerSettings(_Section):
    """``[managers.<ext>]``: one manager's name, mobiles and CRM identities."""

    name: str = ""
    mobiles: list[str] = []
    # The manager as CRM sources name him: his e-mail in the CRM, and his user id in
    # each CRM whose API holds no extension (``ids = { amocrm = 5550001 }``).
    email: Annotated[str, AfterValidator(_email)] = ""
    ids: dict[SourceName, int | str] = {}
    # Rules ([rules] in the README): his own week (else [rules] hours), quiet hours (only
    # his VIP callers ring him), leave, and the deputies who take his calls, in order.
    hours: Hours | None = None
    quiet: Ranges = []
    leave: list[Leave] = []
    deputies: list[str] = []
    deputy_when: list[DeputyWhen] = list(DEPUTY_WHEN)

    @field_validator("deputies")
    @classmethod
    def _deputies(cls, deputies: list[str]) -> list[str]:
        for ext in deputies:
            if not EXTENSION.match(ext):
                raise ValueError(f"{ext!r} is not an extension (expected digits)")
        if len(set(deputies)) != len(deputies):
            raise ValueError("a deputy is listed twice (expected each deputy once)")
        return deputies


class StoreSettings(_Section):
    """``[store]``: the SQLite file or Redis server that holds learned calls and caches."""

    url: str = "icm.db"
    # Optional (Redis may need none): read only when the file is set or the variable is.
    password: SecretRef = SecretRef(env="ICM_REDIS_PASSWORD")
    optional_secrets: ClassVar[frozenset[str]] = frozenset({"password"})
    prefix: str = Field(default="icm:", min_length=1, max_length=64)
    timeout_ms: int = Field(default=500, ge=10, le=10_000)

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, url: str) -> str:
        if _CONTROL.search(url):
            raise ValueError(f"{url!r} holds a control character (expected a file path or URL)")
        parts = urlsplit(url)
        if parts.scheme.startswith(("redis", "rediss", "unix")) and parts.password:
            raise ValueError(
                "the URL holds a password: secrets are not read from the config file "
                "(expected it in the variable named by store.password_env, or store.password_file)"
            )
        if parts.scheme and parts.scheme not in _STORE_SCHEMES:
            raise ValueError(
                f"unknown scheme {parts.scheme!r} (expected a SQLite file path, "
                "redis://, rediss://, unix:// or redis+sentinel://)"
            )
        return url

    def secrets(self) -> dict[str, str]:
        return {"password": "the store password"}

    def open(self) -> Store:
        """The store these settings name (not yet opened)."""
        password = self.password.get_secret_value() or None
        return open_store(
            self.url, password=password, prefix=self.prefix, timeout_s=self.timeout_ms / 1000
        )


def _listen_address(listen: str) -> str:
    split_host_port(listen)
    return listen


ListenAddress = Annotated[str, AfterValidator(_listen_address)]


def _host_name(name: str) -> str:
    name = name.lower().rstrip(".")
    if len(name) > 253 or not _HOSTNAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a host name (expected e.g. 'pbx.example.com')")
    return name


HostName = Annotated[str, AfterValidator(_host_name)]


class HttpSettings(_Section):
    """``[http]``: the HTTP side (metrics, health, the /route entry)."""

    listen: ListenAddress = "127.0.0.1:9180"
    enabled: bool = True
    # Host names requests may carry besides IP addresses and localhost: any other Host
    # header is refused (DNS rebinding from a browser on the box).
    hosts: list[HostName] = []
    # Optional: a key /route requires (query parameter key=); the shipped [icm-curl]
    # context sends the global ICM_HTTP_KEY, which the daemon sets.
    token: SecretRef = SecretRef(env="ICM_HTTP_TOKEN")
    optional_secrets: ClassVar[frozenset[str]] = frozenset({"token"})

    def secrets(self) -> dict[str, str]:
        return {"token": "the HTTP key"}

    def check_secrets(self) -> dict[str, str]:
        key = self.token.get_secret_value()
        if key and not _HTTP_KEY.fullmatch(key):
            return {
                self.token.key("token"): "not a usable key (expected 16 to 128 letters, "
                "digits and - . _ ~, e.g. from `openssl rand -hex 16`)"
            }
        return {}


class AgiSettings(_Section):
    """``[agi]``: the FastAGI entry."""

    enabled: bool = False
    listen: ListenAddress = "127.0.0.1:4573"


class LogSettings(_Section):
    """``[log]``: level and format of the log."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class Config(_Section):
    """The whole validated configuration. ``path`` is the file it came from."""

    path: Path = Field(default=Path("icm.toml"), strict=False)
    ami: AmiSettings = AmiSettings()
    routing: RoutingSettings = RoutingSettings()
    dial: DialSettings = DialSettings()
    managers: dict[str, ManagerSettings] = {}
    sources: dict[str, SourceSettings] = {}
    store: StoreSettings = StoreSettings()
    http: HttpSettings = HttpSettings()
    agi: AgiSettings = AgiSettings()
    log: LogSettings = LogSettings()
    rules: RulesSettings = RulesSettings()

    def numbers(self) -> Numbers:
        return Numbers(self.routing.country, self.routing.area_code)

    def source_settings(self, name: str) -> SourceSettings:
        """The validated ``[sources.<name>]`` section, or its defaults."""
        settings = self.sources.get(name)
        if settings is None:
            settings = installed_sources()[name].Settings()
        return settings


def split_host_port(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9180"`` or ``"[::1]:9180"`` as (host, port); ValueError if malformed."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not is_digits(port) or not 0 <= int(port) < 65536:
        raise ValueError(f"{listen!r} is not host:port (expected e.g. '127.0.0.1:9180')")
    if host not in ("localhost", ""):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address (expected e.g. 127.0.0.1)") from None
    return host or "0.0.0.0", int(port)


def load(
    path: str | Path,
    environ: Mapping[str, str] | None = None,
    *,
    ami_secret: bool = True,
    source_secrets: bool = True,
) -> Config:
    """Read, validate and complete the configuration file.

    :param environ: where secrets named by ``*_env`` keys are read (the process environment
        in production; a plain dict in tests).
    :param ami_secret: False for commands that do not talk to Asterisk (``icm bind``).
    :param source_secrets: False for commands that ask no source (``icm bind``); the
        secrets of the sources in ``routing.sources`` are read otherwise.
    :raises ConfigError: with one line per problem.
    """
    path = Path(path)
    name = str(path)
    try:
        with path.open("rb") as file:  # bounded: -c /dev/zero must not fill the memory
            data = file.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(
                [f"{name}: larger than {MAX_CONFIG_BYTES // 1024} KiB (expected a TOML file)"]
            )
        raw = tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{name}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{name}: is a directory (expected a TOML file)"]) from None
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{name}: not UTF-8 text (expected a TOML file)"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{name}: not valid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{name}: not valid TOML: nested too deeply"]) from None
    config = from_dict(
        raw,
        name,
        environ or {},
        ami_secret=ami_secret,
        source_secrets=source_secrets,
        path=path,
    )
    if not config.managers and not config.routing.extensions:
        # An empty (or truncated) file would otherwise route every call to nobody.
        raise ConfigError(
            [
                f"{name}: nobody to route to: no [managers.<ext>] section and no "
                "routing.extensions (expected at least one manager's extension)"
            ]
        )
    return config


def from_dict(
    raw: Mapping[str, Any],
    name: str,
    environ: Mapping[str, str],
    *,
    ami_secret: bool = True,
    source_secrets: bool = True,
    path: Path | None = None,
) -> Config:
    """Validate an already parsed configuration (see :func:`load`)."""
    errors: list[str] = []
    raw = dict(raw)
    _refuse_inline_secrets(raw, name, errors)
    source_sections = raw.pop("sources", {})
    try:
        config = Config.model_validate({**raw, "path": path or Path(name)})
    except ValidationError as exc:
        errors.extend(format_errors(exc, name))
        config = None
    sources = _validate_sources(source_sections, name, errors)
    if config is None or errors:
        raise ConfigError(errors)
    # An active source without its own section gets its defaults, checked the same way
    # (a source with a required key, such as a CRM's address, reports it missing).
    missing = {s: {} for s in config.routing.sources if s not in sources}
    sources |= _validate_sources(missing, name, errors)
    if errors:
        raise ConfigError(errors)
    config = config.model_copy(update={"sources": sources})
    _check_numbers(config, name, errors)
    _check_store_path(config.store.url, name, errors)
    _check_manager_ids(config, name, errors)
    _check_rules(config, name, errors)
    config = _with_secrets(config, name, environ, errors, ami=ami_secret, sources=source_secrets)
    if errors:
        raise ConfigError(errors)
    return config


def _validate_sources(sections: Any, name: str, errors: list[str]) -> dict[str, SourceSettings]:
    if not isinstance(sections, dict):
        errors.append(f"{name}: sources: expected a table of [sources.<name>] sections")
        return {}
    known = installed_sources()
    result: dict[str, SourceSettings] = {}
    for source, section in sections.items():
        if source not in known:
            errors.append(
                f"{name}: sources.{printable(source)}: unknown source "
                f"(expected one of: {', '.join(sorted(known))})"
            )
            continue
        try:
            result[source] = known[source].Settings.model_validate(section)
        except ValidationError as exc:
            errors.extend(
                format_errors(exc, name, prefix=("sources", source), model=known[source].Settings)
            )
    return result


def _check_numbers(config: Config, name: str, errors: list[str]) -> None:
    numbers = config.numbers()
    routing = config.routing
    for key, extension in config.managers.items():
        if not EXTENSION.match(key):
            errors.append(
                f"{name}: managers.{printable(key)}: {key!r} is not an extension (expected digits)"
            )
        for i, mobile in enumerate(extension.mobiles):
            _check_number(numbers, mobile, f"{name}: managers.{key}.mobiles[{i}]", errors)
    for i, item in enumerate(routing.exceptions):
        if not EXTENSION.match(item):
            _check_number(numbers, item, f"{name}: routing.exceptions[{i}]", errors)
    if routing.default_number and not EXTENSION.match(routing.default_number):
        _check_number(numbers, routing.default_number, f"{name}: routing.default_number", errors)


def _check_store_path(url: str, name: str, errors: list[str]) -> None:
    """A SQLite path must be able to hold a database file: not a directory, not a device,
    not in a kernel file system."""
    if is_shared(url):
        return
    path = Path(url.removeprefix("sqlite://"))
    try:
        resolved = path.resolve()
        exists, regular = resolved.exists(), resolved.is_file()
    except (OSError, RuntimeError, ValueError):
        exists, regular, resolved = False, False, path
    if resolved.parts[1:2] and resolved.parts[1] in _KERNEL_FILE_SYSTEMS:
        errors.append(
            f"{name}: store.url: {url!r} is in /{resolved.parts[1]} (expected a database "
            "file path, e.g. /var/lib/icm/icm.db)"
        )
    elif exists and not regular:
        what = "a directory" if resolved.is_dir() else "not a regular file"
        errors.append(
            f"{name}: store.url: {url!r} is {what} (expected a database file path, "
            "e.g. /var/lib/icm/icm.db)"
        )


def _check_number(numbers: Numbers, value: str, where: str, errors: list[str]) -> None:
    try:
        numbers.parse(value)
    except NumberError as exc:
        errors.append(f"{where}: {exc} (expected an extension or a phone number)")


def _with_secrets(
    config: Config,
    name: str,
    environ: Mapping[str, str],
    errors: list[str],
    *,
    ami: bool,
    sources: bool,
) -> Config:
    """Read the secrets: the store's password (if it has one), the AMI secret, and those
    of the active sources (the others may lack theirs)."""
    sections: dict[str, _Section] = {"store": config.store, "http": config.http}
    if ami:
        sections["ami"] = config.ami
    update: dict[str, Any] = {}
    for key, section in sections.items():
        update[key], problems = read_secrets(section, environ)
        errors.extend(f"{name}: {key}.{where}: {text}" for where, text in problems)
    if sources:
        update["sources"] = dict(config.sources)
        for source in config.routing.sources:
            settings, problems = read_secrets(config.source_settings(source), environ)
            update["sources"][source] = settings
            errors.extend(f"{name}: sources.{source}.{where}: {text}" for where, text in problems)
    return config.model_copy(update=update)


def _check_manager_ids(config: Config, name: str, errors: list[str]) -> None:
    """A CRM user (or e-mail) maps to one extension only."""
    seen: dict[tuple[str, str], str] = {}
    for ext, manager in config.managers.items():
        keys = [(source, str(user)) for source, user in manager.ids.items()]
        if manager.email:
            keys.append(("email", manager.email))
        for key in keys:
            other = seen.setdefault(key, ext)
            if other != ext:
                what = "e-mail" if key[0] == "email" else f"{key[0]} user"
                errors.append(
                    f"{name}: managers.{ext}: {what} {key[1]} is already manager {other}'s "
                    "(expected each CRM user mapped to one extension)"
                )


def _check_rules(config: Config, name: str, errors: list[str]) -> None:
    """Deputies are managers and never lead back to whom they stand in for; VIP and
    blocked numbers are numbers (or prefixes like '+7495*'), VIP targets managers or numbers."""
    numbers = config.numbers()
    managers = config.managers
    for ext, manager in managers.items():
        for i, deputy in enumerate(manager.deputies):
            where = f"{name}: managers.{printable(ext)}.deputies[{i}]"
            if deputy == ext:
                errors.append(f"{where}: {deputy} is this manager himself (expected another one)")
            elif deputy not in managers:
                errors.append(
                    f"{where}: unknown deputy {deputy!r} (expected a manager of [managers])"
                )
    loop = _deputy_loop(config)
    if loop:
        errors.append(
            f"{name}: managers.{loop[0]}.deputies: a loop of deputies "
            f"({' -> '.join(loop)}) (expected each chain of deputies to end)"
        )
    rules = config.rules
    for i, vip in enumerate(rules.vip):
        for j, item in enumerate(vip.numbers):
            _check_caller(numbers, item, f"{name}: rules.vip[{i}].numbers[{j}]", errors)
        if vip.to and not (EXTENSION.match(vip.to) and vip.to in managers):
            if EXTENSION.match(vip.to):
                errors.append(
                    f"{name}: rules.vip[{i}].to: unknown manager {vip.to!r} "
                    "(expected a manager of [managers] or a phone number)"
                )
            else:
                _check_number(numbers, vip.to, f"{name}: rules.vip[{i}].to", errors)
    for i, item in enumerate(rules.blocked):
        _check_caller(numbers, item, f"{name}: rules.blocked[{i}]", errors)


def _check_caller(numbers: Numbers, value: str, where: str, errors: list[str]) -> None:
    if value.endswith("*"):
        if not PREFIX.match(value):
            errors.append(
                f"{where}: {value!r} is not a prefix (expected '+' and digits of the full "
                "number, then '*', e.g. '+7495123*')"
            )
        return
    try:
        numbers.parse(value)
    except NumberError as exc:
        errors.append(f"{where}: {exc} (expected a phone number or a prefix like '+7495123*')")


def _deputy_loop(config: Config) -> list[str]:
    """A chain of deputies that comes back to where it started, if any."""
    graph = {
        ext: [d for d in m.deputies if d in config.managers] for ext, m in config.managers.items()
    }
    done: set[str] = set()

    def walk(ext: str, path: list[str]) -> list[str]:
        if ext in path:
            return [*path[path.index(ext) :], ext]
        if ext in done:
            return []
        for deputy in graph.get(ext, []):
            if deputy == ext:
                continue  # reported above
            loop = walk(deputy, [*path, ext])
            if loop:
                return loop
        done.add(ext)
        return []

    for ext in graph:
        loop = walk(ext, [])
        if loop:
            return loop
    return []


def _refuse_inline_secrets(raw: Mapping[str, Any], name: str, errors: list[str]) -> None:
    """A secret written into the TOML itself is refused with a pointer to the right place."""

    def walk(node: Mapping[str, Any], trail: tuple[str, ...]) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and (key not in _SECRET_KEYS or not trail):
                if len(trail) < 8:  # no section nests deeper; validation names the key
                    walk(value, (*trail, key))
            elif key in _SECRET_KEYS:
                where = ".".join((*trail, key))
                errors.append(
                    f"{name}: {where}: secrets are not read from the config file "
                    f'(expected {key}_env = "VARIABLE" or {key}_file = "/path")'
                )

    walk(raw, ())
