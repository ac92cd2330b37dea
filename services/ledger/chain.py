"""The chain as this node uses it: its wallet, transfers with an on-chain payload, blocks, status.

Domain code over an `Engine` (the engine's JSON-RPC, a `Protocol` so tests pass a fake): no bus,
no sockets here. Every coin stays at one address, the one derived from the identity key: change
goes back to it (`fundrawtransaction` with `changeAddress`), so the wallet's other keys (the
engine's random key pool) never hold coins and `identity_recover` restores everything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from common.errors import ConflictError, InvalidArgumentError, NodeError
from common.ledger_engine import WALLET_NAME
from services.ledger import payload as payload_codec
from services.ledger import wallet_key
from services.ledger.book import Record
from services.ledger.payload import Payload
from services.ledger.rpc import EngineError

WALLET_LABEL = "bitdust"
NO_WALLET = -18
INSUFFICIENT_FUNDS = -4
MAX_RECENT = 20
MARKET_OPERATIONS = ("offer", "bid", "accept", "storage")


class Engine(Protocol):
    async def call(self, method: str, *params: Any, wallet: bool = False, timeout: float = ...) -> Any: ...


@dataclass(frozen=True)
class Transfer:
    """One transaction as the recipient or the sender sees it."""

    transaction_id: str
    sender: str
    recipient: str
    amount: Decimal
    operation: str
    data: str
    confirmations: int

    def to_dict(self) -> dict[str, Any]:
        return {"transaction_id": self.transaction_id, "sender": self.sender, "recipient": self.recipient,
                "amount": float(self.amount), "operation": self.operation, "data": self.data,
                "confirmations": self.confirmations}


class Chain:
    """One node's wallet on the engine."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.address: str | None = None

    async def load_wallet(self) -> None:
        """Load the node's wallet, creating it on first start."""
        loaded = await self.engine.call("listwallets")
        if WALLET_NAME in loaded:
            return
        try:
            await self.engine.call("loadwallet", WALLET_NAME)
        except EngineError as err:
            if err.code != NO_WALLET and "not found" not in err.message.lower() and "not exist" not in err.message:
                raise
            await self.engine.call("createwallet", WALLET_NAME)

    async def import_key(self, secret: bytes) -> str:
        """Give the wallet the key derived from `secret`; the node's address. No rescan: see `rescan`."""
        number = wallet_key.private_number(secret)
        address = wallet_key.address(number)
        info = await self.engine.call("getaddressinfo", address, wallet=True)
        if not info.get("ismine"):
            # A recovered identity on a fresh engine: the coins are on-chain already, so the wallet
            # must look at the chain again for them (rescan), which the engine does in the call.
            await self.engine.call("importprivkey", wallet_key.wif(number), WALLET_LABEL, True, wallet=True,
                                   timeout=600)
        self.address = address
        return address

    def require_address(self) -> str:
        if self.address is None:
            raise NodeError("the wallet has no key yet: create or recover an identity first",
                            reason="identity_not_exist", status=404)
        return self.address

    async def balance(self) -> dict[str, Any]:
        address = self.require_address()
        balances = await self.engine.call("getbalances", wallet=True)
        mine = balances.get("mine") or {}
        return {"balance": float(Decimal(mine.get("trusted", 0))), "address": address,
                "unconfirmed": float(Decimal(mine.get("untrusted_pending", 0))),
                "immature": float(Decimal(mine.get("immature", 0)))}

    async def send(self, recipient: str, amount: Decimal, payload: Payload) -> str:
        """Build, sign and broadcast one transfer; its transaction id.

        Raises:
            InvalidArgumentError: `recipient` is not an address of this chain, data too long.
            ConflictError: the wallet cannot pay the amount and the fee (`insufficient_funds`).
        """
        _, signed = await self.build(recipient, amount, payload)
        return await self.broadcast(signed)

    async def build(self, recipient: str | None, amount: Decimal | None, payload: Payload) -> tuple[str, str]:
        """(transaction id, signed hex) of one transfer, not broadcast yet.

        Outputs in a fixed order: the payment to `recipient` (none for a bare record), the payload,
        then the change back to our address.
        """
        address = self.require_address()
        outputs: list[dict[str, Any]] = []
        if recipient is not None and amount is not None:
            if not wallet_key.is_address(recipient):
                raise InvalidArgumentError(f"{recipient!r} is not a wallet address", reason="invalid_recipient")
            outputs.append({recipient: amount})
        if payload.operation or payload.data:
            outputs.append({"data": payload_codec.encode(payload).hex()})
        raw = await self.engine.call("createrawtransaction", [], outputs)
        try:
            funded = await self.engine.call("fundrawtransaction", raw,
                                            {"changeAddress": address, "changePosition": len(outputs)}, wallet=True)
        except EngineError as err:
            if err.code == INSUFFICIENT_FUNDS or "insufficient" in err.message.lower():
                raise ConflictError("Cannot afford to pay fees", reason="insufficient_funds") from None
            raise
        signed = await self.engine.call("signrawtransactionwithwallet", funded["hex"], wallet=True)
        if not signed.get("complete"):
            raise NodeError("the wallet could not sign the transaction", reason="signing_failed")
        decoded = await self.engine.call("decoderawtransaction", signed["hex"])
        return str(decoded["txid"]), str(signed["hex"])

    async def broadcast(self, signed_hex: str) -> str:
        return str(await self.engine.call("sendrawtransaction", signed_hex))

    async def transaction_state(self, txid: str) -> int | None:
        """Confirmations of one of the wallet's transactions, 0 in the pool, None when unknown or dropped."""
        try:
            tx = await self.engine.call("gettransaction", txid, wallet=True)
        except EngineError:
            return None
        confirmations = int(tx.get("confirmations", 0))
        return None if confirmations < 0 else confirmations

    async def produce(self, count: int = 1) -> list[str]:
        """Mine `count` blocks paying the node's address (foundation miners only: checked by the caller)."""
        return list(await self.engine.call("generatetoaddress", count, self.require_address(), timeout=120))

    async def pool_size(self) -> int:
        return int((await self.engine.call("getmempoolinfo")).get("size", 0))

    async def transfer(self, txid: str, confirmations: int | None = None) -> Transfer | None:
        """Sender, recipient, amount and payload of a transaction; None when it carries no coin to anyone."""
        tx = await self.engine.call("getrawtransaction", txid, True)
        found = Payload()
        recipient, amount = "", Decimal(0)
        for out in tx.get("vout", []):
            script = out.get("scriptPubKey") or {}
            raw = payload_codec.from_script(str(script.get("hex", "")))
            if raw is not None:
                found = payload_codec.decode(raw) or found
                continue
            addresses = script.get("addresses") or ([script["address"]] if script.get("address") else [])
            if addresses and not recipient:
                recipient, amount = str(addresses[0]), Decimal(str(out.get("value", 0)))
        sender = await self._sender(tx)
        if recipient == sender:
            # The first output is change only when the payment went to ourselves; else the second.
            for out in tx.get("vout", [])[1:]:
                addresses = (out.get("scriptPubKey") or {}).get("addresses") or []
                if addresses and addresses[0] != sender:
                    recipient, amount = str(addresses[0]), Decimal(str(out.get("value", 0)))
                    break
        if confirmations is None:
            confirmations = int(tx.get("confirmations", 0))
        return Transfer(txid, sender, recipient, amount, found.operation, found.data, confirmations)

    async def _sender(self, tx: dict[str, Any]) -> str:
        vin = tx.get("vin") or []
        if not vin or "txid" not in vin[0]:
            return ""
        previous = await self.engine.call("getrawtransaction", vin[0]["txid"], True)
        out = previous.get("vout", [])[int(vin[0]["vout"])]
        addresses = (out.get("scriptPubKey") or {}).get("addresses") or []
        return str(addresses[0]) if addresses else ""

    async def since(self, block_hash: str | None) -> tuple[list[dict[str, Any]], str]:
        """Wallet transactions received since `block_hash` (the pool's too); the new cursor."""
        reply = await self.engine.call("listsinceblock", *([block_hash] if block_hash else []), wallet=True)
        received = [t for t in reply.get("transactions", []) if t.get("category") == "receive"]
        return received, str(reply.get("lastblock"))

    async def info(self, p2p_port: int, foundation: list[str]) -> dict[str, Any]:
        """`blockchain_info`: the reference's node / wallet / miner sections, from the engine."""
        chain = await self.engine.call("getblockchaininfo")
        network = await self.engine.call("getnetworkinfo")
        peers = await self.engine.call("getpeerinfo")
        uptime = await self.engine.call("uptime")
        best = await self.engine.call("getblockheader", chain["bestblockhash"])
        blocks = int(chain["blocks"])
        agreeing = sum(1 for p in peers if int(p.get("synced_headers", -1)) == blocks)
        wallet: dict[str, Any] = {"balance": None, "address": self.address}
        if self.address is not None:
            wallet = await self.balance()
        return {
            "node": {
                "app_version": network.get("subversion"), "protocol_version": network.get("protocolversion"),
                "port": p2p_port, "difficulty": float(Decimal(str(chain.get("difficulty", 0)))),
                "blocks": blocks, "last_block": chain["bestblockhash"],
                "last_block_ago": max(0, int(time.time()) - int(best.get("time", 0))),
                "uptime": int(uptime), "address": self.address, "connections": len(peers),
                "connections_list": [p.get("addr") for p in peers],
                "consensus": agreeing, "consensus_percent": round(100.0 * agreeing / len(peers), 1) if peers else 100.0,
                "chain": chain.get("chain"),
            },
            "wallet": wallet,
            "miner": {"address": self.address if self.address in foundation else None, "name": "regtest",
                      "connected_mining_pool": False, "foundation": self.address in foundation},
        }

    async def record_of(self, tx: dict[str, Any], seen: float) -> Record | None:
        """The market record a decoded transaction carries, or None when it carries none."""
        found: Payload | None = None
        for out in tx.get("vout", []):
            raw = payload_codec.from_script(str((out.get("scriptPubKey") or {}).get("hex", "")))
            if raw is not None:
                found = payload_codec.decode(raw)
        if found is None or found.operation not in MARKET_OPERATIONS:
            return None
        recipient, amount = "", Decimal(0)
        first = (tx.get("vout") or [{}])[0]
        addresses = (first.get("scriptPubKey") or {}).get("addresses") or []
        if addresses:
            recipient, amount = str(addresses[0]), Decimal(str(first.get("value", 0)))
        return Record(str(tx["txid"]), found.operation, await self._sender(tx), recipient, amount, found.data, seen)

    async def block(self, height: int) -> tuple[list[dict[str, Any]], float]:
        """The decoded transactions of the block at `height`, and its time."""
        block_hash = await self.engine.call("getblockhash", height)
        block = await self.engine.call("getblock", block_hash, 2)
        return list(block.get("tx", [])), float(block.get("time", time.time()))

    async def pool(self, skip: set[str]) -> list[dict[str, Any]]:
        """Decoded transactions waiting in the pool, but those in `skip`."""
        found = []
        for txid in await self.engine.call("getrawmempool"):
            if txid in skip:
                continue
            try:
                found.append(await self.engine.call("getrawtransaction", txid, True))
            except EngineError:
                continue  # mined or dropped meanwhile: the block scan sees it
        return found
