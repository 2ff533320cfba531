"""A project-local PostgreSQL for development, started from the machine's PostgreSQL binaries.

Why the machine's binaries rather than a pip-installed server: they are the real, complete
server (every contrib module, the same major version operators run), they start in about a
second (`initdb --no-sync`, fsync off), and they need no extra system user or download. The
data lives in a git-ignored folder (`.local/postgres`); as root, PostgreSQL must run as the
`postgres` user, which cannot read a folder under a 0700 home, so the data then goes to a
folder under the system temp directory named after the project path.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import asyncpg


class EmbeddedPostgresError(RuntimeError):
    pass


def find_postgres_bin_dir() -> Path:
    """PG_BIN_DIR, else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    candidates: list[Path] = []
    if env := os.environ.get("PG_BIN_DIR"):
        candidates.append(Path(env))
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=5, check=True)
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0
    )
    candidates.extend(Path(p) for p in reversed(versions))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise EmbeddedPostgresError(
        "no PostgreSQL server binaries found (initdb, pg_ctl): install the postgresql package, set PG_BIN_DIR,"
        " or set DATABASE_URL to a running server"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedPostgres:
    """Start, use and stop a throwaway or persistent local cluster."""

    def __init__(self, data_root: Path, *, database: str = "agent_api", port: int | None = None) -> None:
        self._is_root = os.geteuid() == 0
        if self._is_root:
            digest = hashlib.sha256(str(data_root.resolve()).encode()).hexdigest()[:12]
            data_root = Path(tempfile.gettempdir()) / f"agent-api-pg-{digest}"
        self.root = data_root
        self.data_dir = data_root / "data"
        self.log_file = data_root / "postgres.log"
        self.database = database
        self.port = port or free_port()
        self.bin_dir = find_postgres_bin_dir()
        self._started = False

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._is_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._is_root:
            user = pwd.getpwnam("postgres")
            for path in (self.root, *(p for p in self.root.rglob("*"))):
                os.chown(path, user.pw_uid, user.pw_gid)
            os.chmod(self.root, 0o700)

    def start(self) -> str:
        """Initialise (first time), start on 127.0.0.1 only, create the database; return its URL."""
        self._prepare_dirs()
        if (self.data_dir / "postmaster.pid").exists():
            # Left over from a run that was killed: stop it rather than fail on the lock.
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", timeout=30)
        if not (self.data_dir / "PG_VERSION").exists():
            result = self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--no-locale",
            )
            if result.returncode != 0:
                raise EmbeddedPostgresError(f"initdb failed: {result.stderr.strip()[-500:]}")
        options = (
            f"-p {self.port} -h 127.0.0.1 -F -c unix_socket_directories='' -c max_connections=200"
            " -c shared_buffers=32MB -c synchronous_commit=off -c full_page_writes=off"
        )
        result = self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w", "-t", "60", "start"
        )
        if result.returncode != 0:
            log_tail = self.log_file.read_text(errors="replace")[-800:] if self.log_file.exists() else ""
            raise EmbeddedPostgresError(f"pg_ctl start failed: {result.stderr.strip()[-400:]} {log_tail}")
        self._started = True
        asyncio.run(self._create_database(self.database))
        return self.url

    async def _create_database(self, name: str) -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", database="postgres")
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    def stop(self) -> None:
        if not self._started:
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", timeout=60)
        self._started = False
