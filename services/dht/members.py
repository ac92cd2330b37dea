"""Layer member lists: entries signed by their member, sharded over buckets that each fit one STORE.

A node attached to a layer announces itself with one *member entry*:

    {"idurl": "http://host:port/name.xml", "dht_id": "<hex>", "address": "ip:port",
     "published": 1795718943, "expire_at": 1795719243, "signature": "<b64>"}

The signature is the member's master key over `signed_bytes`: the bytes a typed record's owner
signs (`records.signed_bytes`), with the layer, the `layer_members` type, the IDURL as key and the
contact data and lifetime as data. So nobody else can name a member, move it to another address or
keep it alive longer. An entry lives until `effective_expiry`: its `expire_at`, but at most
`MAX_MEMBER_TTL` after its `published`, which may lie at most `records.MAX_CLOCK_SKEW` ahead of the
storing node's clock. The cap is computed from signed fields, so storing nodes and readers agree on
it without rewriting (and breaking) the signed entry.

A layer's entries are spread over `MEMBER_BUCKETS` keys (`members:<n>`, `n` from a hash of the
IDURL). A bucket envelope keeps the latest entry of each member and the members `rank` puts first
that fit `records.MAX_ENVELOPE_BYTES`, so a bucket always fits rpcudp's 8 KiB request.

Who stays when a bucket is full. Identities are cheap (anyone can run an identity server and mint
thousands), so "the freshest wins" let a flood of minted members push honest suppliers and brokers
out. A storing node ranks by what it has seen itself (`MemberStanding`), then shares the room out:
- members whose DHT node *answered* this node's ping at the address it announced from (a
  request/reply, so the address is real and one address is one claim: a second member answering
  at the same ip:port counts as not answered), and that it has seen announced for `SENIORITY`
  seconds, come first; then those with one of the two; then the rest. A fresh identity never
  displaces an established, answering member; it only takes room that is left;
- within a tier, the room goes round-robin over identity servers (the IDURL's host) and over
  the IP address the member answered from (else the one it claims): the n-th member of one host
  or one IP is taken only after every other host and IP had n-1, so one identity server or one
  machine with many ports gets a share, not the bucket;
- then the most recently published (a `published` ahead of the clock counts as now). Even the largest
entries (a 291-character IDURL, a 4096-bit key's signature) fit five to a bucket: a layer holds at
least 40 members, the cap of the single unsigned list this replaces, and about 80 typical ones.

Pure logic. Checking a signature needs the member's public key, which is `Directory`'s business;
`CheckedEntries` remembers its verdicts.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, OrderedDict
from typing import Any, Iterable

from services.dht import records

MEMBER_BUCKETS = 8
SENIORITY = 600
"""Seconds a storing node must have seen a member announced before it ranks as established."""
MAX_STANDING = 10_000
"""Members (and answering DHT nodes) whose standing a node remembers."""
MAX_MEMBER_TTL = 600
"""The longest an entry may live after its `published` (members re-announce every 90 seconds)."""

MAX_IDURL_CHARS = 291
"""`http://` + a 253-character host + `:65535/` + a 20-character name + `.xml` (identity's IDURL rule)."""
MAX_DHT_ID_CHARS = 40
MAX_ADDRESS_CHARS = 64
MAX_SIGNATURE_CHARS = 700
"""Base64 of a 4096-bit RSA signature (the largest key size) is 684 characters."""

MAX_STORE_CHECKS = 4
"""New entry signatures a storing node checks for one STORE; the others in it are dropped.

An honest STORE carries one entry (an announcement); a bucket handed to a newcomer carries more,
but its members re-announce within a minute and a half. Each check may fetch an identity, so one
datagram must not buy many."""
MAX_READ_CHECKS = 128
"""New entry signatures a reader checks for one read of a layer (entries held by more nodes first)."""
CHECK_CONCURRENCY = 16
CHECK_CACHE_SIZE = 10_000
FAILED_CHECK_TTL = 60.0
"""How long a failed check is remembered: a member whose identity could not be fetched may appear."""

_BUCKET_PREFIX = "members:"
_ENTRY_FIELDS = ("idurl", "dht_id", "address", "published", "expire_at", "signature")


def bucket_of(idurl: str) -> int:
    """The bucket a member's entries live in: a hash of its IDURL, so one member has one bucket."""
    return int.from_bytes(hashlib.sha1(idurl.encode()).digest()[:4], "big") % MEMBER_BUCKETS


def bucket_key(bucket: int) -> str:
    return f"{_BUCKET_PREFIX}{int(bucket)}"


def bucket_dkey(layer_id: int, bucket: int) -> bytes:
    """The DHT key of one bucket of a layer."""
    return records.storage_key(layer_id, records.LAYER_MEMBERS, bucket_key(bucket))


def bucket_of_key(key: str) -> int:
    """The bucket a record key names; raises `RecordError` when it names none."""
    digits = key[len(_BUCKET_PREFIX):] if key.startswith(_BUCKET_PREFIX) else ""
    if not digits.isdigit() or int(digits) >= MEMBER_BUCKETS or bucket_key(int(digits)) != key:
        raise records.RecordError(f"{key!r} is not a member bucket", "malformed_record")
    return int(digits)


def new_entry(idurl: str, dht_id: str, address: str, published: int, ttl: int) -> dict[str, Any]:
    """An entry announcing `idurl` from `published` for `ttl` seconds, still to be signed."""
    return {"idurl": idurl, "dht_id": dht_id, "address": address, "published": int(published),
            "expire_at": int(published) + int(ttl)}


def signed_bytes(layer_id: int, entry: dict[str, Any]) -> bytes:
    """What a member signs: the layer, itself, its contact data and its lifetime."""
    data = {name: entry[name] for name in ("dht_id", "address", "published", "expire_at")}
    return records.signed_bytes(layer_id, records.LAYER_MEMBERS, entry["idurl"], data)


def digest(layer_id: int, entry: dict[str, Any]) -> bytes:
    """What a signature check is remembered by: the signed bytes and the signature together.

    Not the (IDURL, signature) pair: a genuine signature pasted onto changed contact data or a
    longer lifetime must be checked again, and fail.
    """
    return hashlib.sha256(signed_bytes(layer_id, entry) + b"\n" + entry["signature"].encode()).digest()


def effective_expiry(entry: dict[str, Any]) -> int:
    """When an entry stops counting: its `expire_at`, at most `MAX_MEMBER_TTL` after its `published`."""
    return min(int(entry["expire_at"]), int(entry["published"]) + MAX_MEMBER_TTL)


def _text(value: Any, longest: int) -> bool:
    return isinstance(value, str) and len(value) <= longest


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_entry(entry: Any, bucket: int, now: float) -> dict[str, Any] | None:
    """The entry with only its known fields, or None when it is malformed, misplaced, expired or early."""
    if not isinstance(entry, dict):
        return None
    if not (_text(entry.get("idurl"), MAX_IDURL_CHARS) and entry["idurl"]
            and _text(entry.get("dht_id"), MAX_DHT_ID_CHARS) and _text(entry.get("address"), MAX_ADDRESS_CHARS)
            and _text(entry.get("signature"), MAX_SIGNATURE_CHARS) and entry["signature"]
            and _whole(entry.get("published")) and _whole(entry.get("expire_at"))):
        return None
    if bucket_of(entry["idurl"]) != bucket:
        return None
    if entry["published"] > now + records.MAX_CLOCK_SKEW or effective_expiry(entry) <= now:
        return None
    return {name: entry[name] for name in _ENTRY_FIELDS}


def entries(env: dict[str, Any], now: float | None = None) -> list[dict[str, Any]]:
    """The well-formed live entries of a bucket envelope, unchecked signatures and all.

    Raises:
        RecordError: the envelope is not a member bucket, or holds no list of entries.
    """
    bucket = bucket_of_key(str(env.get("key")))
    data = env.get("data")
    found = data.get("members") if isinstance(data, dict) else None
    if not isinstance(found, list):
        raise records.RecordError("a member bucket must hold a list of entries", "malformed_record")
    current = time.time() if now is None else now
    return [e for e in (check_entry(item, bucket, current) for item in found) if e is not None]


def newest(found: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The latest entry of each member, by IDURL."""
    latest: dict[str, dict[str, Any]] = {}
    for entry in found:
        held = latest.get(entry["idurl"])
        if held is None or (entry["published"], entry["expire_at"]) > (held["published"], held["expire_at"]):
            latest[entry["idurl"]] = entry
    return latest


def host_of(idurl: str) -> str:
    """The identity server of an IDURL (its host, without the port)."""
    host = idurl.split("://", 1)[-1].split("/", 1)[0]
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0]


def _ip_of(address: str) -> str:
    return address.rsplit(":", 1)[0] if ":" in address else address


def rank(found: Iterable[dict[str, Any]], standing: "MemberStanding | None" = None,
         now: float | None = None) -> list[dict[str, Any]]:
    """The latest entry of each member, best first: the order in which a full bucket keeps them.

    See the module's docstring: tiers by what this node has seen (`standing`), round-robin over
    identity servers and IP addresses within a tier, then the most recently published.
    """
    current = time.time() if now is None else now
    latest = sorted(newest(found).values(), key=lambda e: (-min(e["published"], current), e["idurl"]))
    claimed: set[tuple[str, int]] = set()
    tiers: list[list[tuple[dict[str, Any], str]]] = [[], [], []]
    for entry in latest:
        origin = standing.answered_at(entry["dht_id"]) if standing is not None else None
        if origin is not None and origin in claimed:
            origin = None  # one answering address, one member: the others count as not answered
        if origin is not None:
            claimed.add(origin)
        senior = standing is not None and standing.senior(entry["idurl"], current)
        tier = 2 - (origin is not None) - senior
        tiers[tier].append((entry, origin[0] if origin is not None else _ip_of(entry["address"])))
    ranked: list[dict[str, Any]] = []
    for tier_entries in tiers:
        ranked.extend(_round_robin(tier_entries))
    return ranked


def _round_robin(found: list[tuple[dict[str, Any], str]]) -> list[dict[str, Any]]:
    """`found` (entry, IP) reordered so that each pass takes at most one more entry per host and per IP."""
    taken: list[dict[str, Any]] = []
    left = list(found)
    by_host: Counter[str] = Counter()
    by_ip: Counter[str] = Counter()
    limit = 0
    while left:
        limit += 1
        waiting = []
        for entry, ip in left:
            host = host_of(entry["idurl"])
            if by_host[host] < limit and by_ip[ip] < limit:
                by_host[host] += 1
                by_ip[ip] += 1
                taken.append(entry)
            else:
                waiting.append((entry, ip))
        left = waiting
    return taken


def bucket_envelope(layer_id: int, bucket: int, found: Iterable[dict[str, Any]], publisher: str,
                    standing: "MemberStanding | None" = None, now: float | None = None) -> dict[str, Any]:
    """The envelope of one bucket: the latest entry per member, the best ranked that fit one STORE (`rank`)."""
    ranked = rank(found, standing, now)
    env = records.make_envelope(layer_id, records.LAYER_MEMBERS, bucket_key(bucket), {"members": []},
                                max((effective_expiry(e) for e in ranked), default=0), publisher,
                                published=max((e["published"] for e in ranked), default=0))
    size = len(records.canonical(env).encode())
    kept = []
    for entry in ranked:
        cost = len(records.canonical(entry).encode()) + 1  # and a comma
        if size + cost > records.MAX_ENVELOPE_BYTES:
            break
        kept.append(entry)
        size += cost
    env["data"] = {"members": kept}
    return env


def with_entries(env: dict[str, Any], kept: list[dict[str, Any]]) -> dict[str, Any]:
    """`env` holding only `kept` (the entries whose signatures checked out); `merge` ranks them."""
    return dict(env, data={"members": list(kept)})


def merge(old: dict[str, Any] | None, new: dict[str, Any], now: float | None = None,
          standing: "MemberStanding | None" = None) -> dict[str, Any] | None:
    """The bucket a storing node keeps: live entries of both, the latest per member, ranked by `standing`
    (see `rank`); None when none is live.

    Both sides' signatures were checked before (`new` by the caller, `old` when it was stored).
    """
    current = time.time() if now is None else now
    held: list[dict[str, Any]] = []
    if old is not None:
        try:
            held = entries(old, current)
        except records.RecordError:
            held = []  # an unreadable old copy is replaced
    found = held + entries(new, current)
    if not found:
        return None
    return bucket_envelope(new["layer_id"], bucket_of_key(new["key"]), found, new["publisher"], standing, current)


class CheckedEntries:
    """Verdicts of entry signatures already checked, so a re-announced or re-read entry costs nothing.

    Keyed by `digest`. A good verdict lasts until its entry expires, a failure `FAILED_CHECK_TTL`;
    at most `CHECK_CACHE_SIZE` verdicts, least recent out (peers can fill it).
    """

    def __init__(self, size: int = CHECK_CACHE_SIZE):
        self.size = size
        self._verdicts: OrderedDict[bytes, tuple[bool, float]] = OrderedDict()

    def get(self, key: bytes, now: float) -> bool | None:
        """The remembered verdict, or None when the entry was not checked (or the verdict lapsed)."""
        found = self._verdicts.get(key)
        if found is None:
            return None
        if found[1] <= now:
            del self._verdicts[key]
            return None
        self._verdicts.move_to_end(key)
        return found[0]

    def put(self, key: bytes, ok: bool, until: float) -> None:
        self._verdicts[key] = (ok, until)
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > self.size:
            self._verdicts.popitem(last=False)

    def __len__(self) -> int:
        return len(self._verdicts)


class MemberStanding:
    """What a storing node has seen of members itself: since when each is announced, and which DHT
    nodes answered its ping, at which address.

    Both tables hold at most `MAX_STANDING` rows. A member not re-announced for `MAX_MEMBER_TTL` is
    forgotten first; when the table is still full a newcomer is not recorded (it stays fresh),
    rather than an established member being pushed out by a flood of minted ones.
    """

    def __init__(self, size: int = MAX_STANDING):
        self.size = size
        self._seen: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """IDURL -> (first seen, last seen), the least recently seen first."""
        self._answered: OrderedDict[str, tuple[str, int]] = OrderedDict()
        """Hex DHT id -> the address it answered a ping from, the least recent first."""

    def note_seen(self, found: Iterable[dict[str, Any]], now: float) -> None:
        """Genuine entries of these members arrived (their signatures were checked)."""
        for entry in found:
            idurl = entry["idurl"]
            held = self._seen.pop(idurl, None)
            if held is None or held[1] <= now - MAX_MEMBER_TTL:  # new, or back after a lapse
                self._forget_lapsed(now)
                if len(self._seen) >= self.size:
                    continue  # full of live members: the newcomer is not recorded
                held = (now, now)
            self._seen[idurl] = (held[0], now)

    def _forget_lapsed(self, now: float) -> None:
        """Drop members not announced for `MAX_MEMBER_TTL` (the table is in order of last seen)."""
        while self._seen:
            idurl, (_, last) = next(iter(self._seen.items()))
            if last > now - MAX_MEMBER_TTL:
                return
            del self._seen[idurl]

    def senior(self, idurl: str, now: float) -> bool:
        """Whether this node has seen `idurl` announced for `SENIORITY` seconds, without a lapse."""
        held = self._seen.get(idurl)
        return held is not None and held[0] <= now - SENIORITY and held[1] > now - MAX_MEMBER_TTL

    def note_answer(self, dht_id: str, address: tuple[str, int]) -> None:
        """The DHT node `dht_id` answered our ping from `address`."""
        self._answered.pop(dht_id, None)
        self._answered[dht_id] = (str(address[0]), int(address[1]))
        while len(self._answered) > self.size:
            self._answered.popitem(last=False)

    def answered_at(self, dht_id: str) -> tuple[str, int] | None:
        """The address the DHT node `dht_id` answered from, None if it never answered us."""
        return self._answered.get(dht_id)
