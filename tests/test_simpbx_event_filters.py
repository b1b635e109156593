"""The simulated AMI port filters events as Asterisk 20.19's manager.c does: the cases
tests/realpbx/test_facts.py::test_event_filters checks on the real PBX, and the shipped
manager_icm.conf."""

from __future__ import annotations

import pytest

from simpbx.ami_server import AmiUser
from simpbx.event_filters import EventFilters
from simpbx.pbx import TEST_SECRET, asterisk_file

KINDS = ("FactProbe", "Other", "Fact1", "Factd", "Class7", "Class:", "FactEnd")


def user_event(kind: str) -> str:
    return f"Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: {kind}\r\n\r\n"


def passing(filters: EventFilters) -> list[str]:
    return [k for k in KINDS if filters.should_send("UserEvent", user_event(k))]


def test_the_advanced_form_filters_on_one_header_exactly() -> None:
    text = (
        "[observer]\nsecret = x\nread = all\n"
        "eventfilter(action(include),name(UserEvent),header(UserEvent),method(exact)) = FactProbe\n"
    )
    user = AmiUser.from_manager_conf(text, "observer", secret="x")
    assert user.filters.warnings == []
    assert [k for k in KINDS if user.passes_filters("UserEvent", user_event(k))] == ["FactProbe"]
    assert not user.passes_filters("Hangup", "Event: Hangup\r\nUserEvent: FactProbe\r\n")


def test_legacy_filters_are_posix_regular_expressions() -> None:
    filters = EventFilters.parse(
        [("eventfilter", "UserEvent: Fact\\d"), ("eventfilter", "UserEvent: Class[[:digit:]]")]
    )
    assert passing(filters) == ["Factd", "Class7"]  # \d is a "d" in POSIX


@pytest.mark.parametrize(
    ("lines", "hangup_sip", "hangup_local", "other"),
    [
        ([], True, True, True),
        ([("eventfilter", "!Channel: Local/")], True, False, True),
        ([("eventfilter", "Event: Hangup|Event: Dial")], True, True, False),
        (
            [("eventfilter", "Event: Hangup"), ("eventfilter", "!Channel: Local/")],
            True,
            False,
            False,
        ),
        ([("eventfilter(name(Hangup),method(none))", "")], True, True, False),
        (
            [("eventfilter(action(exclude),header(Channel),method(starts_with))", "Local/")],
            True,
            False,
            True,
        ),
    ],
)
def test_include_and_exclude_combine_as_should_send_event(
    lines: list[tuple[str, str]], hangup_sip: bool, hangup_local: bool, other: bool
) -> None:
    filters = EventFilters.parse(lines)
    assert filters.warnings == []
    assert filters.should_send("Hangup", "Event: Hangup\r\nChannel: SIP/1-1\r\n") is hangup_sip
    assert filters.should_send("Hangup", "Event: Hangup\r\nChannel: Local/1@x-1\r\n") is (
        hangup_local
    )
    assert filters.should_send("Newexten", "Event: Newexten\r\nChannel: SIP/1-1\r\n") is other


@pytest.mark.parametrize(
    ("criteria", "pattern"),
    [
        ("eventfilter", ""),
        ("eventfilter(method(bogus))", "x"),
        ("eventfilter(name(Hangup),method(none))", "x"),
        ("eventfilter(method(exact))", ""),
        ("eventfilter(name(Hangup)", "x"),
        ("eventfilter", "a\\w"),
        ("eventfilter", "(a"),
    ],
)
def test_a_filter_asterisk_refuses_is_skipped_with_a_warning(criteria: str, pattern: str) -> None:
    filters = EventFilters.parse([(criteria, pattern)])
    assert filters.include == [] and filters.exclude == []
    assert len(filters.warnings) == 1


def test_the_shipped_user_sees_only_what_icm_reads() -> None:
    user = AmiUser.from_manager_conf(asterisk_file("manager_icm.conf"), "icm", secret=TEST_SECRET)
    assert user.filters.warnings == []
    for event in ("UserEvent", "DeviceStateChange", "ExtensionStatus", "DialBegin", "Hangup"):
        assert user.passes_filters(event, f"Event: {event}\r\nPrivilege: call,all\r\n")
    assert not user.passes_filters("Newexten", "Event: Newexten\r\nPrivilege: dialplan,all\r\n")
