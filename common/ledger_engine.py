"""The blockchain engine of a node (`ledgerd`): where it is, how it is started, where it keeps its data.

The engine is Litecoin Core (`litecoind`, Debian's package) on a regtest chain: deploy renders its
supervisord program from `argv`, and the ledger process reads its RPC port and cookie from the same
place. Both live here because two parts of the node (deploy and the ledger process) need them.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from common.config_store import ConfigStore
from common.home import NodeHome

BINARY = "litecoind"
WALLET_NAME = "wallet"
"""The engine's one wallet; its only key is derived from the node's identity key."""
P2P_PORT_OPTION = "services/bismuth-node/p2p-port"
RPC_PORT_OPTION = "services/bismuth-node/rpc-port"
LISTEN_HOST_OPTION = "services/bismuth-node/listen-host"
WHITELIST_OPTION = "services/bismuth-node/whitelist"
DATA_CARRIER_SIZE = 1024
"""Bytes of OP_RETURN script the engine relays and mines (its default, 83, is too small for our records)."""


def binary() -> str | None:
    """The engine's executable, or None when it is not installed (`scripts/setup.sh` installs it)."""
    return shutil.which(BINARY)


def data_dir(home: NodeHome) -> Path:
    """The engine's data folder, under the ledger's state folder."""
    return home.state_dir("ledger") / "engine"


def cookie_file(home: NodeHome) -> Path:
    """The RPC cookie the engine writes at each start (user `__cookie__`, a fresh password)."""
    return data_dir(home) / "regtest" / ".cookie"


def pid_file(home: NodeHome) -> Path:
    """Where the ledger process writes its pid: the engine wakes it with SIGUSR1 (`wake_command`)."""
    return home.state_dir("ledger") / "ledger.pid"


def wake_command(home: NodeHome) -> str:
    """What the engine runs (through sh) when a wallet transaction changes or a block arrives: wake the
    ledger process, so it reads the change now rather than at its next poll. No ZMQ in Debian's build."""
    return f"kill -USR1 $(cat {shlex.quote(str(pid_file(home)))}) 2>/dev/null"


def argv(home: NodeHome, config: ConfigStore, executable: str) -> list[str]:
    """The engine's command line: regtest, RPC on loopback with cookie auth, P2P on the listen host."""
    whitelist = [w.strip() for w in str(config.get(WHITELIST_OPTION)).split(",") if w.strip()]
    return [
        executable, "-regtest", f"-datadir={data_dir(home)}", "-server=1", "-listen=1",
        "-printtoconsole=1", "-nodebuglogfile",
        f"-port={config.get(P2P_PORT_OPTION)}", f"-bind={config.get(LISTEN_HOST_OPTION)}",
        f"-rpcport={config.get(RPC_PORT_OPTION)}", "-rpcbind=127.0.0.1", "-rpcallowip=127.0.0.1",
        f"-wallet={WALLET_NAME}", f"-datacarriersize={DATA_CARRIER_SIZE}", "-fallbackfee=0.0001",
        "-dnsseed=0", "-discover=0", "-upnp=0", "-txindex=1",
        # Small: a regtest chain of a storage market needs little cache and a small mempool.
        "-keypool=1", "-dbcache=4", "-maxmempool=5", "-par=1", "-rpcthreads=4", "-maxconnections=32",
        f"-walletnotify={wake_command(home)}", f"-blocknotify={wake_command(home)}",
        *(f"-whitelist=noban@{net}" for net in whitelist),
    ]
