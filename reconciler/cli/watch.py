"""`reconciler watch PATH…`: the long-running service: file-watch auto-reconcile plus the backup clock."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from reconciler.cli.plan import default_state_dir, parse_at


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--apply", "mode", type=click.Choice(["none", "safe", "all"]), default="safe", show_default=True,
              help="none: plan and report only; safe: backups and additive actions (prune and unpair wait for "
                   "`reconciler apply`); all: everything the plan says.")
@click.option("--metrics-address", metavar="HOST:PORT", default="127.0.0.1:9108", show_default=True,
              help="Prometheus exposition; 'off' to disable.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="One line per event on stderr (journald keeps them).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="Where the journal lives.")
@click.option("--grace", type=click.FloatRange(0), default=300.0, show_default=True,
              help="Seconds in-flight backups may finish after SIGTERM before they are aborted cleanly.")
@click.option("--resync", type=click.FloatRange(1), default=900.0, show_default=True,
              help="Re-plan at least every this many seconds, whatever the schedules say.")
@click.option("--retry", type=click.FloatRange(1), default=300.0, show_default=True,
              help="Seconds before a due backup that did not succeed is tried again.")
@click.option("--parallel", type=click.IntRange(1, 64), default=4, show_default=True, help="VMs worked on at once.")
@click.option("--at", "at", metavar="TIME", help="Run the clock as if started at TIME (ISO-8601; tests, demos).")
def watch(paths: tuple[Path, ...], mode: str, metrics_address: str, log_format: str, state_dir: Path | None,
          grace: float, resync: float, retry: float, parallel: int, at: str | None) -> None:
    """Keep the world matching the policies under PATH…, and run backups when they are due.

    SIGHUP reloads the policies; SIGTERM or SIGINT stop gracefully (a second one aborts at once)."""
    from reconciler.adapters.metrics import LiveMetrics, parse_address
    from reconciler.watch.clock import SystemClock
    from reconciler.watch.cycle import ApplyMode
    from reconciler.watch.log import Log, LogFormat
    from reconciler.watch.service import WatchConfig, Watcher

    clock = SystemClock.starting_at(parse_at(at)) if at else SystemClock()
    log = Log(sys.stderr, LogFormat(log_format))  # real time stamps, also under --at
    metrics = LiveMetrics()
    if metrics_address != "off":
        try:
            host, port = parse_address(metrics_address)
            bound = metrics.serve(host, port)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--metrics-address") from None
        except OSError as exc:
            raise click.ClickException(f"cannot serve metrics on {metrics_address}: {exc.strerror or exc}") from None
        log.info("metrics.serving", address=f"{bound[0]}:{bound[1]}")
    config = WatchConfig(tuple(paths), state_dir or default_state_dir(), ApplyMode(mode), grace=grace,
                         resync=dt.timedelta(seconds=resync), retry=dt.timedelta(seconds=retry), parallel=parallel)
    watcher = Watcher(config, clock, log, metrics)
    watcher.install_signal_handlers()
    try:
        code = watcher.run()
    except Exception as exc:  # a bug in the loop itself: one line, and systemd restarts us
        log.error("watch.crashed", error=f"{type(exc).__name__}: {exc}")
        raise click.exceptions.Exit(2) from None
    raise click.exceptions.Exit(code)
