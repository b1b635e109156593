"""The ``icm`` command. It only reads arguments, loads the configuration and calls the
parts; exit codes: 0 done, 1 failed, 2 bad configuration or arguments."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from icm import __version__
from icm.config import Config, ConfigError, load
from icm.numbers import is_digits
from icm.safetext import escaped, shown
from icm.store import Store, StoreError

DEFAULT_CONFIG = "icm.toml"
MAP_WAIT_S = 3.0  # how long `icm lookup` waits for the CRMs' user maps
CHECK_AMI_S = 3.0  # how long `icm check-config` tries AMI for its device check
MAX_LIMIT = 100_000  # rows `icm bindings` lists at most
EXIT_GRACE_S = 2.0  # after a failed start-up, how long the interpreter may take to exit


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"icm: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icm", description="ICM: every client's call reaches the client's own manager."
    )
    parser.add_argument("--version", action="version", version=f"icm {__version__}")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "-c",
        "--config",
        default=os.environ.get("ICM_CONFIG", DEFAULT_CONFIG),
        help="configuration file (default: $ICM_CONFIG or icm.toml)",
    )
    sub = parser.add_subparsers(metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int], text: str) -> Any:
        cmd = sub.add_parser(name, parents=[config], help=text, description=text)
        cmd.set_defaults(run=run)
        return cmd

    command("run", _run, "run the daemon")
    command("check-config", _check, "validate the configuration file and exit")
    command("reload", _reload, "make the running daemon re-read its configuration file")
    lookup = command("lookup", _lookup, "look a number up through the sources, offline")
    lookup.add_argument("number")
    lookup.add_argument("--explain", action="store_true", help="show every source's answer")
    lookup.add_argument("--json", action="store_true", help="print the decision as JSON")
    lookup.add_argument(
        "--at",
        metavar='"YYYY-MM-DD HH:MM"',
        help="check the rules (hours, leave, quiet hours) at this moment, in [rules] timezone",
    )
    bind = command("bind", _bind, "pin NUMBER to a manager's extension (or a number)")
    bind.add_argument("number")
    bind.add_argument("target")
    bind.add_argument("--note", default="", help="why (shown by `icm bindings`)")
    unbind = command("unbind", _unbind, "remove the pinned binding of NUMBER")
    unbind.add_argument("number")
    bindings = command("bindings", _bindings, "list pinned (or learned) bindings")
    bindings.add_argument("--learned", action="store_true", help="learned ones instead")
    bindings.add_argument(
        "--limit",
        type=_limit,
        default=1000,
        help=f"at most this many, newest first (1 to {MAX_LIMIT}; default 1000)",
    )
    bindings.add_argument("--json", action="store_true")
    forget = command("forget", _forget, "forget what was learned about NUMBER")
    forget.add_argument("number")
    demo = sub.add_parser(
        "demo",
        help="run the daemon against a simulated PBX that places sample calls",
        description="Run ICM against a built-in simulated Asterisk (no PBX needed): it "
        "places sample calls and prints each decision; /metrics stays live.",
    )
    demo.add_argument("--listen", default="127.0.0.1:9180", help="HTTP address for /metrics")
    demo.add_argument("--once", action="store_true", help="exit after the sample calls")
    demo.set_defaults(run=_demo)
    return parser


def _limit(text: str) -> int:
    """``--limit``: a count of rows, 1 to MAX_LIMIT, in ASCII digits."""
    if not is_digits(text) or len(text) > 7 or not 1 <= int(text) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{shown(text)!r} is not a number from 1 to {MAX_LIMIT}")
    return int(text)


def _config(
    args: argparse.Namespace, *, ami_secret: bool = True, source_secrets: bool = True
) -> Config:
    return load(args.config, os.environ, ami_secret=ami_secret, source_secrets=source_secrets)


def _run(args: argparse.Namespace) -> int:
    from icm import logs
    from icm.connections import raise_fd_limit
    from icm.daemon import Daemon, StartError

    config = _config(args)
    logs.setup(config.log)
    raise_fd_limit()
    try:
        asyncio.run(Daemon(config, environ=os.environ).run())
    except (OSError, StartError, StoreError) as exc:
        logging.getLogger("icm").error("cannot start: %s", exc)
        _exit_soon(1)
        return 1
    return 0


def _exit_soon(code: int) -> None:
    """Make sure the process ends: a thread left behind by a part that failed to start
    (a database connection, a resolver) must not keep a daemon that serves nothing alive,
    holding its ports, where a supervisor would take it for running."""
    import threading

    def hard_exit() -> None:
        logging.shutdown()
        os._exit(code)

    timer = threading.Timer(EXIT_GRACE_S, hard_exit)
    timer.daemon = True
    timer.start()


def _check(args: argparse.Namespace) -> int:
    config = _config(args)
    routing = config.routing
    print(
        f"{config.path}: OK (sources: {', '.join(routing.sources) or 'none'}; "
        f"managers: {len(config.managers)}; store: {config.store.url}; "
        f"AMI {config.ami.username}@{config.ami.host}:{config.ami.port})"
    )
    for line in asyncio.run(_check_devices(config)):
        print(line)
    return 0  # a warning is not a mistake in the file


async def _check_devices(config: Config) -> list[str]:
    """The devices Asterisk reports against the dial templates' channel technology, when
    AMI answers within a few seconds; otherwise the check is skipped, and said so."""
    from icm.ami.client import AmiClient, AmiError
    from icm.dialing import technology_warnings

    where = f"{config.ami.username}@{config.ami.host}:{config.ami.port}"
    try:  # nothing listening: say so at once rather than retry for seconds
        async with asyncio.timeout(CHECK_AMI_S):
            _, writer = await asyncio.open_connection(config.ami.host, config.ami.port)
        writer.close()
    except (OSError, TimeoutError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no answer"
        return [f"device check skipped: AMI at {config.ami.host}:{config.ami.port}: {reason}"]
    quiet = logging.getLogger("icm.ami")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the reason is said below, once
    ami = AmiClient(config.ami, lambda message: None)
    ami.start()
    try:
        if not await ami.wait_logged_in(CHECK_AMI_S):
            return [
                f"device check skipped: no AMI login as {where} within {CHECK_AMI_S:.0f} s "
                "(Asterisk down or unreachable, or the secret refused)"
            ]
        devices = await ami.list_action("DeviceStateList", timeout=CHECK_AMI_S)
        try:
            hints = await ami.list_action("ExtensionStateList", timeout=CHECK_AMI_S)
        except AmiError:
            hints = []
    except AmiError as exc:
        return [f"device check skipped: {exc}"]
    finally:
        await ami.close()
        quiet.setLevel(level)
    names = [m.get("device") for m in devices] + [m.get("hint") for m in hints]
    warnings = technology_warnings(config.dial, names)
    if warnings:
        return [f"warning: {line}" for line in warnings]
    return [f"devices: {len(devices)} devices and {len(hints)} hints match the dial templates"]


def _reload(args: argparse.Namespace) -> int:
    """Ask the daemon (through its loopback HTTP side) to reload; its verdict is printed.
    The file is checked here first, so a mistake is reported even if the daemon is down."""
    import urllib.error
    import urllib.request

    from icm.config import split_host_port

    config = _config(args)
    if not config.http.enabled:
        print("icm: http is disabled: send SIGHUP to the daemon instead", file=sys.stderr)
        return 1
    host, port = split_host_port(config.http.listen)
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/-/reload"
    try:
        reload = urllib.request.Request(url, method="POST", headers={"X-ICM-Reload": "yes"})
        with urllib.request.urlopen(reload, timeout=10) as r:
            print(r.read().decode().strip())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode().strip(), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"icm: no daemon answers on {host}:{port} ({exc})", file=sys.stderr)
        return 1


def _lookup(args: argparse.Namespace) -> int:
    from icm.explain import check_lines, parse_at
    from icm.metrics import Metrics
    from icm.model import Presence, RouteRequest
    from icm.ratelimit import Priority, asking
    from icm.router import now
    from icm.rules import Rules
    from icm.snapshot import Snapshot

    config = _config(args, ami_secret=False)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if _number(config, args.number) is None:  # the same answer as bind, unbind, forget
        return 2

    rules = Rules.from_config(config)
    try:
        moment = parse_at(args.at, rules) if args.at else rules.local(now())
    except ValueError as exc:
        print(f"icm: {exc}", file=sys.stderr)
        return 2

    async def lookup(store: Store) -> int:
        if "icmdb" in config.routing.sources:
            await store.ping()  # down: an error, not "no source knows"
        # The daemon's own routing, with presence unknown (no AMI here), at ``moment``.
        snapshot = Snapshot.build(
            config, store, Metrics(), lambda ext: Presence.UNKNOWN, lambda: moment
        )
        await snapshot.start()
        # Offline there is time to let the CRMs' user maps load (the daemon never waits).
        await asyncio.gather(
            *(
                source.wait_ready(MAP_WAIT_S)  # type: ignore[attr-defined]
                for source, _ in snapshot.sources
                if hasattr(source, "wait_ready")
            )
        )
        try:
            deadline = asyncio.get_running_loop().time() + snapshot.timing.budget_s
            with asking(priority=Priority.LOOKUP):  # after the calls, sharing a store
                decision = await snapshot.router.route(
                    RouteRequest(token="0", number=args.number, deadline=deadline)
                )
        finally:
            await snapshot.close()
        if args.json:
            print(json.dumps(decision.as_dict(), ensure_ascii=False, indent=2))
            return 0
        target = decision.dial or "back to the scenario"
        print(f"{decision.number or args.number}: {decision.status.value} -> {target}")
        if decision.manager:
            name = f" ({decision.manager_name})" if decision.manager_name else ""
            print(f"  manager {decision.manager}{name}, from {decision.source}")
        print(f"  reason: {escaped(decision.reason)} (presence is not checked offline)")
        if args.explain:
            print("\n".join(check_lines(decision, moment)))
            print(f"  sources asked in order, {decision.lookup_ms:.1f} ms in all:")
            for i, step in enumerate(decision.steps, 1):
                detail = escaped(step.detail)
                print(f"  {i}. {step.source:<10} {step.outcome:<10} {step.ms:7.1f} ms  {detail}")
            if not decision.steps:
                print("  (none: the number was settled before asking)")
        return 0

    return _with_store(config, lookup)


def _bind(args: argparse.Namespace) -> int:
    from icm.managers import Managers

    config = _config(args, ami_secret=False, source_secrets=False)
    numbers = config.numbers()
    managers = Managers.from_config(config, numbers)
    number = _number(config, args.number)
    if number is None:
        return 2
    target = args.target
    if managers.get(target) is None:
        if not numbers.is_number(target):
            print(
                f"icm: {target!r} is neither a manager's extension (add [managers.{target}] "
                "or list it in routing.extensions) nor a phone number",
                file=sys.stderr,
            )
            return 2
        target = numbers.parse(target)
    if managers.is_exception(target):
        print(f"icm: {target} is an exception: ICM never routes to it", file=sys.stderr)
        return 2

    async def bind(store: Store) -> int:
        await store.pin(number, target, args.note)
        print(f"{number} -> {target} (pinned)")
        return 0

    return _with_store(config, bind)


def _unbind(args: argparse.Namespace) -> int:
    config = _config(args, ami_secret=False, source_secrets=False)
    number = _number(config, args.number)
    if number is None:
        return 2

    async def unbind(store: Store) -> int:
        if await store.unpin(number):
            print(f"{number}: unpinned")
            return 0
        print(f"{number}: no pinned binding", file=sys.stderr)
        return 1

    return _with_store(config, unbind)


def _bindings(args: argparse.Namespace) -> int:
    config = _config(args, ami_secret=False, source_secrets=False)

    async def show(store: Store) -> int:
        rows = await store.bindings(pinned=not args.learned, limit=args.limit)
        if args.json:
            found = [
                {"number": r.number, "target": r.target, "pinned": r.pinned, "at": r.at}
                | {"note": r.note}
                for r in rows
            ]
            print(json.dumps(found, ensure_ascii=False, indent=2))
            return 0
        for row in rows:
            when = datetime.fromtimestamp(row.at, UTC).strftime("%Y-%m-%d %H:%M")
            note = f"  {escaped(row.note)}" if row.note else ""
            print(f"{escaped(row.number):<16} {escaped(row.target):<16} {when}{note}")
        if not rows:
            print("(none)", file=sys.stderr)
        return 0

    return _with_store(config, show)


def _forget(args: argparse.Namespace) -> int:
    from icm.guard import cache_key, is_remote
    from icm.sources import installed_sources

    config = _config(args, ami_secret=False, source_secrets=False)
    number = _number(config, args.number)
    if number is None:
        return 2
    remote = sorted(name for name, kind in installed_sources().items() if is_remote(kind))

    async def forget(store: Store) -> int:
        found = await store.forget(number)
        dropped = [name for name in remote if await store.delete(cache_key(name, number))]
        cached = f"; cached answers dropped: {', '.join(dropped)}" if dropped else ""
        print(f"{number}: {'forgotten' if found else 'nothing learned'}{cached}")
        return 0

    return _with_store(config, forget)


def _demo(args: argparse.Namespace) -> int:
    try:
        from icm.demo import run_demo  # needs the simulated PBX, not part of the product
    except ModuleNotFoundError as exc:
        if exc.name != "simpbx" and not (exc.name or "").startswith("simpbx."):
            raise
        print("icm demo needs the simulated PBX: pip install -e '.[demo]'", file=sys.stderr)
        return 2
    return asyncio.run(run_demo(listen=args.listen, once=args.once))


def _number(config: Config, raw: str) -> str | None:
    from icm.numbers import Skip

    number = config.numbers().normalise(raw)
    if isinstance(number, Skip):
        print(f"icm: {shown(repr(raw))} is not a phone number ({number.reason})", file=sys.stderr)
        return None
    return number


def _with_store(config: Config, work: Callable[[Store], Awaitable[int]]) -> int:
    async def run() -> int:
        store = config.store.open()
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
