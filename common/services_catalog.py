"""The logical services of a node (the reference engine's names), where each one runs.

A logical service is switched by its `services/<name>/enabled` option; its state is derived from
that option, the health of its hosting process and the state of what it depends on.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LogicalService:
    """One reference-engine service: name, hosting process and dependencies."""

    name: str
    process: str
    depends: tuple[str, ...] = field(default_factory=tuple)
    enabled: bool = True
    built: bool = True
    """False while the capability is not built yet: the service then reports OFF whatever its option says."""

    @property
    def config_path(self) -> str:
        return f"services/{self.name.removeprefix('service_').replace('_', '-')}/enabled"


_S = LogicalService

CATALOG: tuple[LogicalService, ...] = (
    _S("service_network", "transport"),
    _S("service_gateway", "transport", ("service_network",)),
    _S("service_tcp_connections", "transport", ("service_network",)),
    _S("service_tcp_transport", "transport", ("service_tcp_connections", "service_gateway")),
    _S("service_udp_datagrams", "dht", ("service_network",)),
    _S("service_entangled_dht", "dht", ("service_udp_datagrams",)),
    _S("service_identity_server", "identity", ("service_tcp_connections",), enabled=False),
    _S("service_identity_propagate", "identity", ("service_gateway", "service_tcp_connections")),
    _S("service_p2p_hookups", "transport", ("service_gateway", "service_identity_propagate")),
    _S("service_nodes_lookup", "dht", ("service_entangled_dht", "service_p2p_hookups")),
    # Keeps a relay while the node cannot be dialled (behind NAT); idle on a reachable node.
    _S("service_proxy_transport", "transport", ("service_nodes_lookup",)),
    # Relays packets for NATed nodes that ask (bounded: see services/transport/relay.py).
    _S("service_proxy_server", "transport", ("service_nodes_lookup",)),
    _S("service_keys_registry", "identity", ("service_p2p_hookups",)),
    _S("service_keys_storage", "storage", ("service_keys_registry", "service_my_data")),
    _S("service_employer", "storage", ("service_customer", "service_nodes_lookup")),
    _S("service_customer", "storage", ("service_p2p_hookups",)),
    _S("service_supplier", "storage", ("service_keys_registry",)),
    _S("service_data_motion", "storage", ("service_employer",)),
    _S("service_list_files", "storage", ("service_customer",)),
    _S("service_backup_db", "storage", ("service_list_files", "service_data_motion")),
    _S("service_rebuilding", "storage", ("service_data_motion",)),
    _S("service_backups", "storage", ("service_list_files", "service_rebuilding", "service_backup_db")),
    _S("service_restores", "storage", ("service_backups",)),
    _S("service_my_data", "storage", ("service_keys_registry", "service_backup_db")),
    _S("service_shared_data", "storage", ("service_my_data",)),
    _S("service_private_messages", "messaging", ("service_keys_registry", "service_entangled_dht")),
    _S("service_message_history", "messaging", ("service_private_messages",)),
    _S("service_message_broker", "messaging", ("service_private_messages", "service_nodes_lookup")),
    _S("service_private_groups", "messaging", ("service_private_messages", "service_nodes_lookup")),
    # Serves group members' queue requests (fetch, produce) on a broker: the broker's queue verbs.
    _S("service_joint_postman", "messaging", ("service_private_messages",)),
    # The ledger process reports these from its engine (ledgerd): OFF, with the reason, while it is absent or down.
    _S("service_bismuth_blockchain", "ledger", ("service_tcp_connections",)),
    _S("service_bismuth_wallet", "ledger", ("service_bismuth_blockchain",)),
    _S("service_bismuth_node", "ledger", ("service_bismuth_blockchain",)),
)

BY_NAME: dict[str, LogicalService] = {s.name: s for s in CATALOG}


def hosted_by(process: str) -> list[LogicalService]:
    """The logical services a process hosts."""
    return [s for s in CATALOG if s.process == process]


def dependents(name: str) -> list[str]:
    """Every service that depends on `name`, directly or not, in dependency order."""
    found: list[str] = []
    frontier = [name]
    while frontier:
        current = frontier.pop(0)
        for service in CATALOG:
            if current in service.depends and service.name not in found:
                found.append(service.name)
                frontier.append(service.name)
    return found
