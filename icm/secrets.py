"""Secrets come from an environment variable or a file, never from the config file itself.

A secret is named in the config by where to find it (``secret_env`` or ``secret_file``);
its value is read once at start-up into a :class:`pydantic.SecretStr`, whose ``repr`` and
``str`` hide it, so it cannot reach a log line or an error message by accident.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr


class SecretError(ValueError):
    """A secret that cannot be read. The message names where it was looked for, never a value."""


def read_secret(
    what: str, env_name: str | None, file: Path | None, environ: Mapping[str, str]
) -> SecretStr:
    """Read a secret from ``file`` if given, else from the environment variable ``env_name``.

    :param what: the secret's description for error messages ("the AMI secret").
    """
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read {what} from file {file}: {exc.strerror}") from None
        except UnicodeDecodeError:  # its message would quote the secret's bytes
            raise SecretError(f"file {file} is not UTF-8 text (expected {what})") from None
        except ValueError:
            raise SecretError(f"file name {str(file)!r} holds a NUL character") from None
        if not value:
            raise SecretError(f"file {file} is empty (expected {what})")
        return SecretStr(value)
    if not env_name:
        raise SecretError(f"no place for {what}: set an environment variable name or a file")
    value = environ.get(env_name, "").strip()
    if not value:
        raise SecretError(f"environment variable {env_name} is not set (expected {what} in it)")
    return SecretStr(value)


class SettingsWithSecrets(Protocol):
    """Settings naming their secrets (see :meth:`icm.sources.SourceSettings.secrets`)."""

    def secrets(self) -> dict[str, str]: ...

    def check_secrets(self) -> dict[str, str]: ...

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any: ...


def read_secrets(
    settings: SettingsWithSecrets, environ: Mapping[str, str]
) -> tuple[Any, list[tuple[str, str]]]:
    """Fill each secret ``settings.secrets()`` names from its ``<name>_file`` (if set) or
    ``<name>_env`` key.

    :returns: the completed settings, and (key, message) for each secret that could not
        be read: the key is the ``*_env`` or ``*_file`` setting that named the place.
    """
    found: dict[str, SecretStr] = {}
    errors: list[tuple[str, str]] = []
    for name, what in settings.secrets().items():
        env_name = getattr(settings, f"{name}_env", None)
        file_name = getattr(settings, f"{name}_file", None)
        try:
            file = Path(file_name) if file_name else None
            found[name] = read_secret(what, env_name, file, environ)
        except SecretError as exc:
            errors.append((f"{name}_file" if file_name else f"{name}_env", str(exc)))
    if not found:
        return settings, errors
    completed = settings.model_copy(update=found)
    errors += list(completed.check_secrets().items())
    return completed, errors
