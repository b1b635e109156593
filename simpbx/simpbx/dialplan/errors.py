"""The two ways a simulated call stops early: the simulator refuses, or the channel hangs up."""

from __future__ import annotations


class DialplanError(Exception):
    """The dialplan cannot be simulated faithfully: syntax error, unsupported feature, bad
    target.  Parse errors name the file and the line."""


class Hangup(Exception):
    """The channel is hung up.

    A :class:`ChannelHost` may raise it from ``dial``/``app``/``user_event`` to say the
    application returned -1 (the channel hung up under it); the interpreter then stops
    executing the dialplan exactly as Asterisk's PBX loop does."""
