"""The layout of a node's home folder and its secrets."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from common.fsutil import atomic_write

DEFAULT_HOME = "~/.bitdust"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """`--home`, else `$BITDUST_HOME`, else `~/.bitdust`, as an absolute path."""
    chosen = home or os.environ.get("BITDUST_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


class NodeHome:
    """Paths under one node's home; creating it makes the folders and secrets it needs."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    @property
    def metadata(self) -> Path:
        return self.root / "metadata"

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def options_file(self) -> Path:
        return self.config_dir / "options.json"

    @property
    def networks_dir(self) -> Path:
        return self.config_dir / "networks"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        """Runtime files: generated supervisord/nats configs, socket, pid file."""
        return self.root / "run"

    @property
    def spool(self) -> Path:
        """Hand-over folder for bulk payloads between processes (see `common.spool`)."""
        return self.root / "spool"

    @property
    def apisecret_file(self) -> Path:
        return self.metadata / "apisecret"

    @property
    def bustoken_file(self) -> Path:
        return self.metadata / "bustoken"

    @property
    def supervisor_socket(self) -> Path:
        return self.run / "supervisor.sock"

    def state_dir(self, process: str) -> Path:
        """A process's own state folder, without creating it."""
        return self.root / "state" / process

    def state(self, process: str) -> Path:
        """A process's own state folder."""
        path = self.state_dir(process)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def ensure(self) -> None:
        """Create the folders and generate the API secret and bus token on first start."""
        for folder in (self.metadata, self.config_dir, self.networks_dir, self.logs, self.run, self.spool):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.metadata, 0o700)
        os.chmod(self.spool, 0o700)
        for secret_file in (self.apisecret_file, self.bustoken_file):
            if not secret_file.exists():
                token = base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")
                atomic_write(secret_file, token, mode=0o600)

    def api_secret(self) -> str:
        return self.apisecret_file.read_text().strip()

    def bus_token(self) -> str:
        return self.bustoken_file.read_text().strip()
