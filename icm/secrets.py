"""Secrets come from an environment variable or a file, never from the config file itself.

A secret is one setting of type :class:`SecretRef`. In the TOML file it is named by where
to find it, with two keys: ``token_env = "VARIABLE"`` or ``token_file = "/path"`` (the file
wins when both are set); a key ``token = ...`` holding the secret itself is refused. The
value is read once, after validation, into a :class:`pydantic.SecretStr` whose ``repr``
and ``str`` hide it, so it cannot reach a log line or an error message by accident.

Settings that hold secrets say which ones they need in ``secrets()`` (a name and a
description for messages); :func:`read_secrets` fills them in.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

MAX_SECRET_BYTES = 65_536  # a secret file larger than this is not a secret


class SecretError(ValueError):
    """A secret that cannot be read. The message names where it was looked for, never a value."""


class SecretRef(BaseModel):
    """Where one secret is read from (an environment variable or a file) and, once read,
    its value."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    env: str | None = None
    file: str | None = None
    value: SecretStr = Field(default=SecretStr(""), exclude=True)

    @property
    def named(self) -> bool:
        """A place is configured (an optional secret is read only then)."""
        return bool(self.env or self.file)

    def key(self, name: str) -> str:
        """The TOML key that named the place: ``token_file`` if set, else ``token_env``."""
        return f"{name}_file" if self.file else f"{name}_env"

    def get_secret_value(self) -> str:
        return self.value.get_secret_value()

    def read(self, what: str, environ: Mapping[str, str]) -> SecretRef:
        """This reference with its value read (``what`` describes it for messages).

        :raises SecretError: naming the variable or file, never a value.
        """
        file = Path(self.file) if self.file else None
        return self.model_copy(update={"value": read_secret(what, self.env, file, environ)})


def read_secret(
    what: str, env_name: str | None, file: Path | None, environ: Mapping[str, str]
) -> SecretStr:
    """Read a secret from ``file`` if given, else from the environment variable ``env_name``.

    :param what: the secret's description for error messages ("the AMI secret").
    """
    if file is not None:
        return SecretStr(_read_file(what, file))
    if not env_name:
        raise SecretError(f"no place for {what}: set an environment variable name or a file")
    value = environ.get(env_name, "").strip()
    if not value:
        raise SecretError(f"environment variable {env_name} is not set (expected {what} in it)")
    return SecretStr(value)


def _read_file(what: str, file: Path) -> str:
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SecretError(f"cannot read {what} from file {file}: {exc.strerror}") from None
    except ValueError:
        raise SecretError(f"file name {str(file)!r} holds a NUL character") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise SecretError(f"file {file} is larger than {MAX_SECRET_BYTES} bytes (expected {what})")
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:  # its message would quote the secret's bytes
        raise SecretError(f"file {file} is not UTF-8 text (expected {what})") from None
    if not value:
        raise SecretError(f"file {file} is empty (expected {what})")
    return value


def secret_fields(model: type[BaseModel]) -> list[str]:
    """The names of ``model``'s fields that are secrets (``SecretRef`` or optional one)."""
    return [
        name
        for name, field in model.model_fields.items()
        if field.annotation is SecretRef or SecretRef in get_args(field.annotation)
    ]


class WithSecrets(BaseModel):
    """Settings holding :class:`SecretRef` fields, written in TOML as ``<name>_env`` and
    ``<name>_file``: this folds those two keys into the one field.

    ``optional_secrets`` names the secrets read only when their file is set or their
    variable is (a Redis password: Redis may need none).
    """

    optional_secrets: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _fold_secret_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in secret_fields(cls):
            if name in data and not isinstance(data[name], dict | SecretRef):
                # A secret written inline: refused by the loader with its own message;
                # never let a validation error quote it.
                del data[name]
            env, file = f"{name}_env", f"{name}_file"
            if env not in data and file not in data:
                continue
            default = cls.model_fields[name].default
            ref = {
                "env": data.pop(env, default.env if isinstance(default, SecretRef) else None),
                "file": data.pop(file, default.file if isinstance(default, SecretRef) else None),
            }
            data[name] = ref
        return data

    def secrets(self) -> dict[str, str]:
        """The secrets these settings need, by field name, each with a description for
        messages (``{"token": "the amoCRM long-lived token"}``)."""
        return {}

    def check_secrets(self) -> dict[str, str]:
        """Problems with the secrets once read, by the ``*_env`` / ``*_file`` key that
        named them (a webhook that is not a URL). Messages never quote a secret."""
        return {}


class SettingsWithSecrets(Protocol):
    """Settings naming their secrets (see :class:`WithSecrets`)."""

    optional_secrets: ClassVar[frozenset[str]]

    def secrets(self) -> dict[str, str]: ...

    def check_secrets(self) -> dict[str, str]: ...

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Self: ...


S = TypeVar("S", bound=SettingsWithSecrets)


def read_secrets(settings: S, environ: Mapping[str, str]) -> tuple[S, list[tuple[str, str]]]:
    """Fill each secret ``settings.secrets()`` names from its file or variable.

    :returns: the completed settings, and (key, message) for each secret that could not
        be read: the key is the ``*_env`` or ``*_file`` setting that named the place.
    """
    found: dict[str, SecretRef] = {}
    errors: list[tuple[str, str]] = []
    for name, what in settings.secrets().items():
        ref = getattr(settings, name)
        if name in settings.optional_secrets and not (ref.file or environ.get(ref.env or "")):
            continue
        try:
            found[name] = ref.read(what, environ)
        except SecretError as exc:
            errors.append((ref.key(name), str(exc)))
    if not found:
        return settings, errors
    completed = settings.model_copy(update=found)
    errors += list(completed.check_secrets().items())
    return completed, errors
