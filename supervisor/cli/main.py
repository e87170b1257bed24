"""``desk-supervisor``: the daemon (``run``), the simulated desk (``demo``), and
``check-config``."""

from __future__ import annotations

import argparse
import gc
import grp
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

import msgspec
import trio

from actors.risk import load_limits
from supervisor.config import load_config, venue_credentials
from supervisor.core.errors import ConfigError, DeskError
from supervisor.ops.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="desk-supervisor",
        description="Keeps an automated trading desk safe: incidents, kill-switch, recovery.",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the supervisor daemon")
    run.add_argument("--config", required=True, help="path of the TOML configuration file")
    demo = sub.add_parser("demo", help="run the whole desk simulated in one process")
    demo.add_argument("--socket", help="control socket path (default: in the state dir)")
    demo.add_argument("--state-dir", help="journal and snapshots (default: a new temp dir)")
    demo.add_argument("--scenario", metavar="NAME",
                      help="play a scripted fault scenario and print the desk's timeline "
                           "(an unknown NAME lists the scenarios)")
    demo.add_argument("--exit", action="store_true",
                      help="with --scenario: stop after it (exit 1 if the response was not seen)")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", required=True)
    journal = sub.add_parser(
        "journal", help="check or export the journal (exit 0 intact, 1 damaged)",
        description="Read the journal without changing it, beside a running daemon or on "
                    "a file set aside as damaged.")
    journal.add_argument("action", choices=["verify", "export"],
                         help="verify: check every record's checksum chain and decoding; "
                              "export: every record as a JSON line, with its check")
    where = journal.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the daemon's config: its state_dir's journal")
    where.add_argument("--path", help="a journal file")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    try:
        if args.command == "check-config":
            cfg = load_config(args.config)
            for venue in cfg.venues:
                venue_credentials(venue)  # a missing credential fails here, not at run
            if cfg.risk.limits:
                load_limits(cfg.risk.limits)  # a missing limits file halts the desk at start
            if cfg.control.socket_group:
                try:
                    grp.getgrnam(cfg.control.socket_group)
                except KeyError:
                    raise ConfigError(f"{args.config}: control.socket_group "
                                      f"{cfg.control.socket_group!r} is not a group on this "
                                      "host") from None
            print(f"{args.config}: ok ({len(cfg.venues)} venue(s), state_dir {cfg.state_dir})")
            return 0
        if args.command == "journal":
            path = (Path(args.path) if args.path
                    else Path(load_config(args.config).state_dir) / "journal.sqlite3")
            return trio.run(_journal_command, args.action, path)
        # The objects of start-up live for the whole run: out of the collector's way.
        gc.freeze()
        if args.command == "run":
            from supervisor.runtime.daemon import run_until_signal

            trio.run(run_until_signal, load_config(args.config))
            return 0
        # The demo is the simulated world: imported for this command only, so the
        # daemon's own code never loads the simulators.
        from simulators.demo import run_demo
        from simulators.scenarios import SCENARIOS

        if args.scenario is not None and args.scenario not in SCENARIOS:
            ap.error(f"demo --scenario: unknown scenario {args.scenario!r}; scenarios: "
                     + ", ".join(sorted(SCENARIOS)))

        state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="desk-demo-"))
        socket = args.socket or os.environ.get("DESK_SUPERVISOR_SOCKET") or str(
            state_dir / "control.sock")
        ok = trio.run(partial(run_demo, socket, state_dir, scenario=args.scenario,
                              exit_after=args.exit))
        return 0 if ok else 1
    except (DeskError, BaseExceptionGroup) as exc:
        # Errors raised inside trio arrive wrapped in exception groups: a DeskError in
        # there is a known failure with a one-line reason; anything else is a bug.
        desk_error = _find_desk_error(exc)
        if desk_error is None:
            raise
        print(f"desk-supervisor: {desk_error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _journal_command(action: str, path: Path) -> int:
    """``journal verify|export``: 0 when every record holds, 1 when one does not."""
    from supervisor.runtime.journal import open_journal

    async with await open_journal(path, read_only=True) as journal:
        if action == "export":
            rows = await journal.export()
            out = sys.stdout
            for row in rows:
                out.write(msgspec.json.encode(row).decode() + "\n")
            return 0 if all(r["ok"] for r in rows) else 1
        report = await journal.verify()
    unchained = (f", {report.unchained} written before checksums (not verifiable)"
                 if report.unchained else "")
    if report.ok:
        print(f"journal {path}: ok, {report.events} record(s){unchained}, last seq "
              f"{report.last_seq}")
        return 0
    print(f"journal {path}: DAMAGED: {report.problem} ({report.events} record(s) read"
          f"{unchained})")
    return 1


def _find_desk_error(exc: BaseException) -> DeskError | None:
    if isinstance(exc, DeskError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_desk_error(inner)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
