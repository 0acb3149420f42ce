"""``pmgw``: run the gateway, check a config, simulate a fleet, or run the demo."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from gateway.auth import cli as auth_cli
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.logs import setup_logging

app = typer.Typer(help="pm-gateway: IoT-triggered predictive maintenance at the edge.", no_args_is_help=True)
app.add_typer(auth_cli.users, name="users")
app.add_typer(auth_cli.keys, name="keys")

_FAULT_SPEC = re.compile(r"^(?P<device>[^:]+):(?P<kind>[a-z_]+)(?::at=(?P<at>[\d.]+))?(?::duration=(?P<duration>[\d.]+))?$")


def _load_or_exit(path: Path) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


@app.command()
def run(config: Annotated[Path, typer.Option("--config", "-c", help="YAML configuration file")]) -> None:
    """Run the gateway until Ctrl-C or SIGTERM."""
    from gateway.app import Gateway

    settings = _load_or_exit(config)
    setup_logging(settings.log_level, settings.library_log_level, settings.library_log_levels)
    asyncio.run(Gateway(settings, config).run())


@app.command()
def reload(
    config: Annotated[Path, typer.Option("--config", "-c", help="the YAML file the gateway runs from")],
    wait: Annotated[float, typer.Option(help="seconds to wait for the new revision")] = 10.0,
) -> None:
    """Check the file, then tell the gateway running from it to re-read it (SIGHUP): the live sections take
    effect without a restart; what only a restart changes is listed in /health."""
    import os
    import signal
    import time

    from gateway.settings.revisions import RevisionStore

    settings = _load_or_exit(config)
    pid_file = settings.storage.telemetry.path.parent / "pmgw.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        typer.echo(f"no running gateway found ({pid_file} is missing or unreadable)", err=True)
        raise typer.Exit(1) from None
    store = RevisionStore(settings.identity_database_url())
    before = store.latest()
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        typer.echo(f"the gateway of {pid_file} (pid {pid}) is not running", err=True)
        raise typer.Exit(1) from None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        latest = store.latest()
        if latest is not None and (before is None or latest.number > before.number):
            typer.echo(f"revision {latest.number} in force: {', '.join(latest.sections) or 'no live section changed'}")
            return
        time.sleep(0.2)
    typer.echo(f"signalled pid {pid}; no new revision within {wait:g} s (the file may be unchanged since it was "
               "last read; see the gateway's log and /health)")


@app.command("backup")
def backup_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="the YAML file the gateway runs from")],
    to: Annotated[Path, typer.Option(help="folder the backups are kept in")],
    keep: Annotated[Optional[int], typer.Option(min=1, help="keep this many backups, remove older ones")] = None,
    every: Annotated[Optional[float], typer.Option(min=1, help="go on: a backup every this many seconds")] = None,
    telemetry: Annotated[bool, typer.Option(help="include the embedded telemetry store")] = True,
    postgres: Annotated[str, typer.Option(help="a PostgreSQL store as 'dump' (pg_dump) or 'base' (pg_basebackup, "
                                               "for a server that archives its WAL: continuous backup)")] = "dump",
) -> None:
    """Take a verified online backup of what cannot be rebuilt (work orders, audit log, revisions, keyring,
    buffers, checkpoints, telemetry) while the gateway runs; with --every, one per interval."""
    import time

    from gateway.backup import BackupError, backup

    if postgres not in ("dump", "base"):
        typer.echo("--postgres is 'dump' or 'base'", err=True)
        raise typer.Exit(2)
    settings = _load_or_exit(config)
    setup_logging("INFO")
    while True:
        try:
            folder, manifest = backup(settings, config, to, keep, telemetry, postgres)
        except BackupError as error:
            typer.echo(f"backup failed: {error}", err=True)
            raise typer.Exit(1) from None
        counts = manifest["verification"]["counts"]
        typer.echo(f"{folder}: {len(manifest['parts'])} parts, {counts.get('work_orders', 0)} work orders "
                   f"({counts.get('chains_verified', 0)} chains verified), "
                   f"{manifest['finished_at'] - manifest['started_at']:.1f} s")
        if every is None:
            return
        time.sleep(max(0.0, every - (time.time() - manifest["started_at"])))


@app.command("restore")
def restore_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="the YAML file the gateway will run from")],
    source: Annotated[Path, typer.Option("--from", help="a backup folder, or the folder of backups (the newest)")],
    force: Annotated[bool, typer.Option(help="overwrite data files that exist (the gateway must be stopped)")] = False,
    pgdata: Annotated[Optional[Path], typer.Option(help="a base backup: the fresh PostgreSQL data directory")] = None,
    wal_archive: Annotated[Optional[Path], typer.Option(help="a base backup: the WAL archive to replay")] = None,
) -> None:
    """Restore a backup into the data paths the configuration names (a fresh data directory), and verify it."""
    from gateway.backup import BackupError, latest, restore

    settings = _load_or_exit(config)
    folder = source if (source / "manifest.json").exists() else latest(source)
    if folder is None:
        typer.echo(f"no backup in {source}", err=True)
        raise typer.Exit(1)
    try:
        result = restore(folder, settings, config, force, pgdata, wal_archive)
    except BackupError as error:
        typer.echo(f"restore failed: {error}", err=True)
        raise typer.Exit(1) from None
    counts = result["counts"]
    if counts is None:
        typer.echo(f"restored {folder} in {result['restore_s']:.1f} s; the PostgreSQL base backup is in {pgdata}: "
                   "start PostgreSQL on it as its own user (it replays the WAL archive, then opens), then run "
                   "'pmgw verify' before the gateway")
        return
    typer.echo(f"restored {folder} in {result['restore_s']:.1f} s: {counts['work_orders']} work orders, "
               f"{counts['chains_verified']} chains verified, {counts['audit_entries']} audit entries")


@app.command("verify")
def verify_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="the YAML file the gateway runs from")],
) -> None:
    """Recompute the audit log's chain and every work order's chain in the stores the configuration names."""
    from gateway.backup import verify_chains

    settings = _load_or_exit(config)
    counts, problems = verify_chains(settings.ticketing.database_url, settings.identity_database_url(),
                                     settings.keyring_path(), settings.audit_witness_path())
    for problem in problems:
        typer.echo(problem, err=True)
    typer.echo(f"{counts['work_orders']} work orders ({counts['chains_verified']} chains verified), "
               f"{counts['events']} events, {counts['audit_entries']} audit entries: "
               + ("OK" if not problems else f"{len(problems)} problem(s)"))
    if problems:
        raise typer.Exit(1)


@app.command("check-config")
def check_config(path: Annotated[Path, typer.Argument(help="YAML configuration file")]) -> None:
    """Validate a configuration file without starting anything."""
    settings = _load_or_exit(path)
    typer.echo(
        f"{path}: OK ({len(settings.sites)} sites, {len(settings.assets)} assets, {len(settings.sources)} sources, "
        f"{len(settings.engineers)} engineers)"
    )


@app.command()
def simulate(
    config: Annotated[Path, typer.Option("--config", "-c", help="gateway config whose assets are simulated")],
    acceleration: Annotated[float, typer.Option(help="simulated seconds per real second (0: as fast as possible)")] = 1.0,
    fault: Annotated[Optional[list[str]], typer.Option(help="DEVICE:KIND[:at=S][:duration=S], simulated seconds")] = None,
    seed: Annotated[int, typer.Option()] = 1,
    duration: Annotated[Optional[float], typer.Option(help="stop after this many simulated seconds")] = None,
    ground_truth: Annotated[Optional[Path], typer.Option(help="append injected faults here as JSON lines")] = None,
    source: Annotated[int, typer.Option(help="index of the source in the config whose devices are simulated")] = 0,
    port: Annotated[Optional[int], typer.Option(help="Modbus, OPC UA: serve on this port instead of the source's")] = None,
    certificate_dir: Annotated[Optional[Path], typer.Option(
        help="OPC UA: run with Basic256Sha256 security, server certificate kept (or created) here")] = None,
) -> None:
    """Simulate the devices of one source of a config: an MQTT fleet publishing to its broker, a
    Modbus TCP server serving its register map, or an OPC UA server with its devices' nodes."""
    from gateway.demo import fleet_for
    from simulators.mqtt_fleet import FleetSimulator
    from simulators.physics import Fault

    settings = _load_or_exit(config)
    setup_logging("INFO")
    if not 0 <= source < len(settings.sources):
        typer.echo(f"--source {source}: the config has {len(settings.sources)} source(s)", err=True)
        raise typer.Exit(2)
    faults = []
    for spec in fault or []:
        match = _FAULT_SPEC.match(spec)
        if not match:
            typer.echo(f"--fault {spec!r}: expected DEVICE:KIND[:at=SECONDS][:duration=SECONDS]", err=True)
            raise typer.Exit(2)
        faults.append(Fault(match["device"], match["kind"], float(match["at"] or 0), float(match["duration"] or 600)))
    chosen = settings.sources[source]
    if chosen.type in ("modbus", "opcua"):
        _simulate_server(settings, chosen, acceleration, seed, faults, duration, port, certificate_dir)
        return
    fleet = fleet_for(settings, chosen.host, chosen.port, acceleration, seed, ground_truth)
    fleet.duration_s = duration
    fleet.faults.extend(faults)
    try:
        simulator = FleetSimulator(fleet)
    except ValueError as error:
        typer.echo(f"--fault: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        simulator.run()
    except KeyboardInterrupt:
        simulator.stop()
    typer.echo(f"published {simulator.published} messages")


def _simulate_server(settings: GatewayConfig, source: Any, acceleration: float, seed: int, faults: list[Any],
                     duration: float | None, port: int | None, certificate_dir: Path | None) -> None:
    from gateway.simulation import modbus_simulator_for, opcua_simulator_for

    try:
        if source.type == "modbus":
            simulator: Any = modbus_simulator_for(settings, source, acceleration, seed, faults, port)
        else:
            simulator = opcua_simulator_for(settings, source, acceleration, seed, faults, port, certificate_dir)
    except ValueError as error:
        typer.echo(f"--fault: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        asyncio.run(simulator.run(duration))
    except KeyboardInterrupt:
        pass
    typer.echo(f"simulated {source.type} devices for {simulator.sim_time:.0f} s")


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="where the demo keeps its databases")] = Path("pmgw-demo"),
    port: Annotated[int, typer.Option(help="API port (0: a free one)")] = 8080,
    acceleration: Annotated[float, typer.Option(help="simulated seconds per real second")] = 30.0,
    healthy: Annotated[float, typer.Option(help="real seconds of healthy operation before the fault")] = 75.0,
    duration: Annotated[Optional[float], typer.Option(help="stop after this many real seconds")] = None,
    seed: Annotated[int, typer.Option()] = 1,
) -> None:
    """Broker + simulated fleet + gateway + API; injects a fault and shows the work order."""
    from gateway.demo import run_demo

    setup_logging("INFO")
    try:
        run_demo(data_dir, port, acceleration, healthy, duration, seed)
    except RuntimeError as error:
        typer.echo(f"demo: {error}", err=True)
        raise typer.Exit(1) from None


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
