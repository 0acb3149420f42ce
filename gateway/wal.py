"""Continuous backup of a PostgreSQL ticket store: WAL archiving and the base backup it replays onto.

PostgreSQL hands every finished WAL segment to its ``archive_command``; with ``archive_timeout`` a
segment is finished at least that often, so the archive is never further behind than that (the RPO):

    archive_mode = on
    archive_timeout = 30
    archive_command = '/opt/pmgw/bin/python -m gateway.wal archive --to /var/backups/pmgw/wal %p %f'

``pmgw backup --postgres base`` takes the base backup (``pg_basebackup``) beside the other parts;
``pmgw restore --pgdata DIR --wal-archive ARCHIVE`` unpacks it into a fresh data directory and sets it to
replay the archive to its end when PostgreSQL starts; ``pmgw verify`` then checks every chain.

Only the standard library here: PostgreSQL runs the archive command for every segment.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

BASE_FILE = "base.tar.gz"


class WalError(Exception):
    pass


def digest(path: Path) -> str:
    """SHA-256 of a file, read in blocks (also what a backup's manifest records)."""
    hashed = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hashed.update(block)
    return hashed.hexdigest()


def archive(segment: Path, name: str, archive_dir: Path) -> bool:
    """Copy a WAL segment into the archive, durably (a crash never leaves half a segment under its name);
    False when the same segment was archived already. A different file under the name is never overwritten:
    PostgreSQL is told it failed and keeps the segment (archives of two clusters mixed up, say)."""
    target = archive_dir / name
    if target.exists():
        if digest(target) == digest(segment):
            return False
        raise WalError(f"{target} exists and differs from {segment}: not overwritten")
    partial = archive_dir / f".{name}.partial"
    with segment.open("rb") as source, partial.open("wb") as copy:
        shutil.copyfileobj(source, copy, 1 << 20)
        copy.flush()
        os.fsync(copy.fileno())
    os.replace(partial, target)
    directory = os.open(archive_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return True


def base_backup(libpq_url: str, target: Path) -> None:
    """A base backup of the whole PostgreSQL cluster, with the WAL it needs to be consistent, as one tar.gz."""
    with tempfile.TemporaryDirectory(prefix="pmgw-basebackup-", dir=target.parent) as scratch:
        result = subprocess.run(["pg_basebackup", f"--dbname={libpq_url}", f"--pgdata={scratch}/base", "--format=tar",
                                 "--gzip", "--wal-method=fetch", "--checkpoint=fast", "--no-manifest"],
                                capture_output=True, text=True, timeout=6 * 3600)
        if result.returncode != 0:
            raise WalError(f"pg_basebackup failed: {result.stderr.strip()[:500]}")
        os.replace(Path(scratch) / "base" / BASE_FILE, target)


def prepare_recovery(base: Path, pgdata: Path, archive_dir: Path) -> None:
    """Unpack a base backup into a fresh ``pgdata`` and make the server replay ``archive_dir`` to its end and
    then open (start it as the database's own user: ``chown -R postgres: pgdata``)."""
    if pgdata.exists() and any(pgdata.iterdir()):
        raise WalError(f"{pgdata} is not empty: restore into a fresh data directory")
    if "'" in str(archive_dir):
        raise WalError(f"{archive_dir}: a WAL archive path with a quote cannot go into restore_command")
    pgdata.mkdir(parents=True, exist_ok=True)
    os.chmod(pgdata, 0o700)
    with tarfile.open(base) as bundle:
        bundle.extractall(pgdata, filter="tar")
    (pgdata / "recovery.signal").touch()
    with (pgdata / "postgresql.auto.conf").open("a") as settings:
        settings.write(f"\n# pmgw restore: replay the WAL archive, then open\n"
                       f"restore_command = 'cp \"{archive_dir.resolve()}/%f\" \"%p\"'\n"
                       "recovery_target_timeline = 'latest'\n"
                       "recovery_target_action = 'promote'\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.wal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    archiving = commands.add_parser("archive", help="archive_command: copy segment %%p named %%f into the archive")
    archiving.add_argument("--to", type=Path, required=True, help="the WAL archive folder")
    archiving.add_argument("segment", type=Path)
    archiving.add_argument("name")
    options = parser.parse_args(argv)
    try:
        archive(options.segment, options.name, options.to)
    except (OSError, WalError) as error:
        print(f"pmgw wal archive: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
