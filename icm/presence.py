"""Whether each manager's phone is available, busy or offline, from AMI events.

Two sources, kept apart: device states (``DeviceStateChange``, ``SIP/101`` -> ``INUSE``)
and hint states (``ExtensionStatus``, extension 101 -> bitmask), where administrators
combine devices or add custom states (DND). A hint, when there is one, wins. Both are
replaced as a whole after every AMI login (DeviceStateList, ExtensionStateList), so a
state missed while the link was down cannot linger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from icm.ami.frames import Message
from icm.model import Presence

DEVICE_STATES = {
    "NOT_INUSE": Presence.AVAILABLE,
    "INUSE": Presence.BUSY,
    "BUSY": Presence.BUSY,
    "RINGING": Presence.BUSY,
    "RINGINUSE": Presence.BUSY,
    "ONHOLD": Presence.BUSY,
    "UNAVAILABLE": Presence.OFFLINE,
    "INVALID": Presence.OFFLINE,
}
MAX_ENTRIES = 100_000  # devices or hints remembered; junk beyond that is ignored
_HINT_OFFLINE = 4
_HINT_BUSY = 1 | 2 | 8 | 16


def hint_presence(status: int) -> Presence:
    """An ExtensionStatus bitmask as presence (-1/-2: the hint is gone)."""
    if status < 0:
        return Presence.UNKNOWN
    if status & _HINT_OFFLINE:
        return Presence.OFFLINE
    if status & _HINT_BUSY:
        return Presence.BUSY
    return Presence.AVAILABLE


class PresenceTracker:
    """Each extension's presence, from device and hint states.

    :param device_of: the device of an extension (``"101"`` -> ``"SIP/101"``)."""

    def __init__(self, device_of: Callable[[str], str]) -> None:
        self._device_of = device_of
        self._devices: dict[str, Presence] = {}
        self._hints: dict[str, Presence] = {}
        self._live: list[Message] | None = None  # events seen while a resync is under way

    def state(self, extension: str) -> Presence:
        hint = self._hints.get(extension)
        if hint is not None and hint is not Presence.UNKNOWN:
            return hint
        return self._devices.get(self._device_of(extension), Presence.UNKNOWN)

    def on_device_state(self, message: Message) -> None:
        if self._live is not None:
            self._live.append(message)
        self._device_state(message)

    def on_extension_status(self, message: Message) -> None:
        if self._live is not None:
            self._live.append(message)
        self._extension_status(message)

    def resync_started(self) -> None:
        """The lists are being asked for: remember live events until they arrive."""
        self._live = []

    def replace(self, devices: Iterable[Message], hints: Iterable[Message]) -> None:
        """Forget everything, take the lists Asterisk just sent, then replay the live
        events that arrived while they were on their way (they are at least as new)."""
        live, self._live = self._live or [], None
        self._devices.clear()
        self._hints.clear()
        for message in devices:
            self._device_state(message)
        for message in hints:
            self._extension_status(message)
        for message in live:
            if message.name == "ExtensionStatus":
                self._extension_status(message)
            else:
                self._device_state(message)

    def _device_state(self, message: Message) -> None:
        device = message.get("device")
        if device and (device in self._devices or len(self._devices) < MAX_ENTRIES):
            self._devices[device] = DEVICE_STATES.get(message.get("state"), Presence.UNKNOWN)

    def _extension_status(self, message: Message) -> None:
        exten = message.get("exten")
        try:
            status = int(message.get("status"))
        except ValueError:
            return
        if exten and (exten in self._hints or len(self._hints) < MAX_ENTRIES):
            self._hints[exten] = hint_presence(status)

    def counts(self) -> dict[str, int]:
        """How many known devices are in each state (for /readyz and logs)."""
        counts: dict[str, int] = {}
        for presence in self._devices.values():
            counts[presence.value] = counts.get(presence.value, 0) + 1
        return counts
