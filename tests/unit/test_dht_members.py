"""Layer member entries: what a member signs, which entries a bucket takes, and what fits one STORE."""

from __future__ import annotations

import itertools
import os
import time

import pytest
import umsgpack

from common import crypto
from common.errors import InvalidArgumentError
from services.dht import members, records
from common import ids

NOW = 1_800_000_000
SIG_4096 = crypto.b64(os.urandom(512))
"""As long as a 4096-bit RSA signature (the largest key size) in base64."""
SIG_2048 = crypto.b64(os.urandom(256))


def idurl_in(bucket: int, make=lambda i: f"http://127.0.0.1:8084/user{i}.xml") -> str:
    """The first IDURL `make(i)` that falls in `bucket`."""
    return next(u for u in map(make, itertools.count()) if members.bucket_of(u) == bucket)


def largest_idurl(i: int) -> str:
    """An IDURL as long as identity's IDURL rule allows: a 253-character host, port 65535, a 20-character name."""
    return f"http://{'h' * 253}:65535/u{i:019d}.xml"


def entry(idurl: str, published: int = NOW, ttl: int = 300, sig: str = SIG_2048, **over) -> dict:
    found = members.new_entry(idurl, "ab" * 20, "127.0.0.1:14441", published, ttl)
    found["signature"] = sig
    found.update(over)
    return found


def bucket(layer: int, bucket_id: int, found: list, publisher: str = "cd" * 20) -> dict:
    return records.make_envelope(layer, records.LAYER_MEMBERS, members.bucket_key(bucket_id), {"members": found},
                                 NOW + 300, publisher, published=NOW)


def test_the_signature_covers_layer_member_contact_and_lifetime():
    base = entry("http://127.0.0.1:8084/alice.xml")
    signed = members.signed_bytes(3, base)
    assert signed == records.signed_bytes(3, records.LAYER_MEMBERS, base["idurl"], {
        "dht_id": base["dht_id"], "address": base["address"], "published": NOW, "expire_at": NOW + 300})
    assert members.signed_bytes(4, base) != signed
    for name, value in (("idurl", "http://127.0.0.1:8084/bob.xml"), ("dht_id", "ef" * 20),
                        ("address", "10.0.0.1:1"), ("published", NOW + 1), ("expire_at", NOW + 301)):
        assert members.signed_bytes(3, dict(base, **{name: value})) != signed, name
    # The signature itself is not signed, but a check is remembered by bytes and signature together.
    assert members.signed_bytes(3, dict(base, signature="other")) == signed
    assert members.digest(3, dict(base, signature="other")) != members.digest(3, base)
    assert members.digest(3, dict(base, address="10.0.0.1:1")) != members.digest(3, base)


def test_a_real_signature_verifies_over_the_signed_bytes():
    key = crypto.generate_private_key(1024)
    found = entry("http://127.0.0.1:8084/alice.xml", sig="")
    found["signature"] = crypto.b64(crypto.sign(key, members.signed_bytes(3, found)))
    check = crypto.verify
    assert check(key.public_key(), members.signed_bytes(3, found), crypto.unb64(found["signature"]))
    assert not check(key.public_key(), members.signed_bytes(3, dict(found, expire_at=NOW + 10**6)),
                     crypto.unb64(found["signature"]))
    assert not check(key.public_key(), members.signed_bytes(5, found), crypto.unb64(found["signature"]))


def test_bucket_keys_are_strict():
    assert [members.bucket_of_key(members.bucket_key(b)) for b in range(members.MEMBER_BUCKETS)] == \
        list(range(members.MEMBER_BUCKETS))
    for key in ("members", "members:", f"members:{members.MEMBER_BUCKETS}", "members:07", "members:-1", "x:1"):
        with pytest.raises(records.RecordError):
            members.bucket_of_key(key)
    assert len({members.bucket_dkey(3, b) for b in range(members.MEMBER_BUCKETS)} |
               {members.bucket_dkey(4, 0)}) == members.MEMBER_BUCKETS + 1


def test_malformed_misplaced_expired_and_early_entries_are_dropped():
    idurl = idurl_in(2)
    good = entry(idurl)
    assert members.check_entry(dict(good, junk="x" * 100), 2, NOW) == good  # extra fields do not ride along
    assert members.check_entry(good, (2 + 1) % members.MEMBER_BUCKETS, NOW) is None
    for bad in (None, "text", {}, dict(good, published=True), dict(good, expire_at=float(NOW + 300)),
                dict(good, idurl=""), dict(good, signature=""), dict(good, signature=SIG_4096 + "x" * 20),
                dict(good, dht_id="a" * 41), dict(good, address="a" * 65), dict(good, idurl=largest_idurl(0) + "x")):
        assert members.check_entry(bad, 2, NOW) is None, bad
    assert members.check_entry(entry(idurl, published=NOW - 300, ttl=300), 2, NOW) is None  # expired
    early = NOW + records.MAX_CLOCK_SKEW + 1
    assert members.check_entry(entry(idurl, published=early), 2, NOW) is None
    assert members.check_entry(entry(idurl, published=NOW + records.MAX_CLOCK_SKEW), 2, NOW) is not None


def test_a_far_future_expiry_is_capped_by_the_signed_publication_time():
    idurl = idurl_in(1)
    forever = entry(idurl, ttl=10**9)
    assert members.effective_expiry(forever) == NOW + members.MAX_MEMBER_TTL
    merged = members.merge(None, bucket(3, 1, [forever]), now=NOW)
    assert merged is not None and merged["expire_at"] == NOW + members.MAX_MEMBER_TTL
    assert members.entries(merged, now=NOW + members.MAX_MEMBER_TTL - 1) == [forever]
    assert members.entries(merged, now=NOW + members.MAX_MEMBER_TTL) == []
    assert members.merge(merged, bucket(3, 1, []), now=NOW + members.MAX_MEMBER_TTL) is None


def test_merge_keeps_live_entries_and_the_latest_per_member():
    a, b, c = (idurl_in(0, lambda i, n=n: f"http://127.0.0.1:8084/{n}{i}.xml") for n in "abc")
    old = members.merge(None, bucket(3, 0, [entry(a), entry(b, published=NOW - 200, ttl=250)]), now=NOW)
    new = bucket(3, 0, [entry(a, published=NOW + 60, sig="newer"), entry(c), "junk",
                        entry(idurl_in(1), published=NOW)])
    merged = members.merge(old, new, now=NOW + 60)
    assert merged is not None
    found = {e["idurl"]: e for e in members.entries(merged, now=NOW + 60)}
    assert set(found) == {a, c}  # b expired at NOW + 50; the bucket-1 entry is not at home here
    assert found[a]["signature"] == "newer"
    assert merged["key"] == members.bucket_key(0) and merged["publisher"] == new["publisher"]
    # An old copy in another format is replaced, not merged.
    legacy = dict(new, data={"members": {a: entry(a)}})
    assert members.merge(legacy, bucket(3, 0, [entry(c)]), now=NOW)["data"]["members"] == [entry(c)]
    with pytest.raises(records.RecordError):
        members.entries(legacy)


def test_a_full_bucket_keeps_the_freshest_and_fits_one_store_request():
    # The worst case: the longest IDURLs, 4096-bit signatures, the longest IPv4 address, a 255 layer.
    names = (largest_idurl(i) for i in itertools.count())
    worst = [entry(u, published=NOW + i, sig=SIG_4096, address="255.255.255.255:65535")
             for i, u in enumerate(itertools.islice((u for u in names if members.bucket_of(u) == 5), 20))]
    assert ids.IDURL_RE.match(worst[0]["idurl"]) and len(worst[0]["idurl"]) == members.MAX_IDURL_CHARS
    assert len(SIG_4096) <= members.MAX_SIGNATURE_CHARS
    env = members.bucket_envelope(255, 5, worst, "ff" * 20, now=NOW + 60)
    kept = env["data"]["members"]
    assert members.MEMBER_BUCKETS * len(kept) >= 40  # the old single list's cap, even in the worst case
    assert [e["published"] for e in kept] == sorted((e["published"] for e in worst), reverse=True)[:len(kept)]
    text = records.encode_envelope(env)  # raises above MAX_ENVELOPE_BYTES
    request = umsgpack.packb(["store", [os.urandom(20), members.bucket_dkey(255, 5), text]])
    assert len(request) <= 8192 - 1024, len(request)  # rpcudp's limit, with room to spare
    assert members.entries(env, now=NOW) == kept
    # One entry more would not have fitted.
    bigger = dict(env, data={"members": kept + [worst[len(kept)]]})
    with pytest.raises(InvalidArgumentError):
        records.encode_envelope(bigger)


def test_a_bucket_holds_about_ten_typical_members():
    names = (f"http://id.bitdust.io:8084/m{i:05d}.xml" for i in itertools.count())
    found = [entry(u, published=NOW + i) for i, u in
             enumerate(itertools.islice((u for u in names if members.bucket_of(u) == 3), 30))]
    kept = members.bucket_envelope(3, 3, found, "ab" * 20)["data"]["members"]
    assert len(kept) >= 9


def test_checked_entries_expire_and_evict_the_least_recent():
    cache = members.CheckedEntries(size=2)
    cache.put(b"a", True, until=100)
    cache.put(b"b", False, until=50)
    assert cache.get(b"a", now=10) is True and cache.get(b"b", now=10) is False
    assert cache.get(b"b", now=50) is None  # lapsed
    cache.put(b"b", True, until=100)
    cache.get(b"a", now=10)  # a is now the most recent
    cache.put(b"c", True, until=100)
    assert cache.get(b"b", now=10) is None and cache.get(b"a", now=10) is True and len(cache) == 2


def test_a_bucket_envelope_round_trips_through_the_wire_format():
    env = members.bucket_envelope(3, 1, [entry(idurl_in(1), published=int(time.time()))], "ab" * 20)
    decoded = records.decode_envelope(records.encode_envelope(env))
    assert members.entries(decoded) == env["data"]["members"]


# --- who stays in a full bucket -----------------------------------------------------------------


def _in_bucket(make, count: int, bucket_id: int = 3) -> list[str]:
    return list(itertools.islice((u for u in map(make, itertools.count()) if members.bucket_of(u) == bucket_id),
                                 count))


def _flood(count: int, published: int, bucket_id: int = 3, dht_id: str = "ee" * 20,
           address: str = "10.6.6.6:666") -> list[dict]:
    """Minted identities of one identity server, stamped `published` (as far ahead as storing nodes allow)."""
    return [entry(u, published=published, ttl=members.MAX_MEMBER_TTL, dht_id=dht_id, address=address)
            for u in _in_bucket(lambda i: f"http://evil.example:8084/m{i}.xml", count, bucket_id)]


def test_host_of_an_idurl():
    assert members.host_of("http://id.example.org:8084/alice.xml") == "id.example.org"
    assert members.host_of("https://id.example.org/alice.xml") == "id.example.org"
    assert members.host_of("http://[::1]:8084/alice.xml") == "[::1]"


def test_a_flood_from_one_identity_server_cannot_push_honest_members_out():
    honest = [entry(u, published=NOW - 80, dht_id=f"{i:040x}", address=f"192.0.2.{i}:14441")
              for i, u in enumerate(_in_bucket(lambda i: f"http://id{i}.example:8084/h{i}.xml", 5))]
    flood = _flood(60, NOW + records.MAX_CLOCK_SKEW)
    kept = members.bucket_envelope(3, 3, honest + flood, "ab" * 20, now=NOW)["data"]["members"]
    assert {e["idurl"] for e in honest} <= {e["idurl"] for e in kept}
    # One server's minted members get what room is left, not all of it.
    assert sum(e["idurl"].startswith("http://evil.example") for e in kept) == len(kept) - len(honest)


def test_one_address_claimed_by_many_members_gets_one_share():
    # Many minted identities on distinct hosts, all at one claimed address: one of them per round.
    mint = [entry(u, published=NOW, address="10.6.6.6:666")
            for u in _in_bucket(lambda i: f"http://evil{i}.example:8084/m.xml", 30)]
    honest = [entry(u, published=NOW - 80, address=f"192.0.2.{i}:14441")
              for i, u in enumerate(_in_bucket(lambda i: f"http://id{i}.example:8084/h{i}.xml", 4))]
    ranked = members.rank(mint + honest, now=NOW)
    assert [e["address"] for e in ranked[:5]].count("10.6.6.6:666") == 1
    assert {e["idurl"] for e in honest} <= {e["idurl"] for e in ranked[:5]}


def test_established_answering_members_come_before_fresh_ones():
    standing = members.MemberStanding()
    old_member = entry(idurl_in(3), published=NOW - 80, dht_id="01" * 20, address="192.0.2.1:14441")
    standing.note_seen([old_member], NOW - members.SENIORITY - 60)
    standing.note_seen([old_member], NOW - 80)  # re-announced all along
    standing.note_answer("01" * 20, ("192.0.2.1", 14441))
    # Fresh members that even answered, each at an address and a host of its own, stamped ahead.
    fresh = [entry(u, published=NOW + records.MAX_CLOCK_SKEW, dht_id=f"{i + 2:040x}", address=f"10.0.{i}.1:1")
             for i, u in enumerate(_in_bucket(lambda i: f"http://m{i}.example:8084/m.xml", 40))]
    for i, e in enumerate(fresh):
        standing.note_seen([e], NOW)
        standing.note_answer(e["dht_id"], (f"10.0.{i}.1", 1))
    assert standing.senior(old_member["idurl"], NOW) and not standing.senior(fresh[0]["idurl"], NOW)
    ranked = members.rank(fresh + [old_member], standing, now=NOW)
    assert ranked[0] == old_member
    kept = members.bucket_envelope(3, 3, fresh + [old_member], "ab" * 20, standing, now=NOW)["data"]["members"]
    assert kept[0] == old_member and len(kept) < len(fresh)


def test_an_answering_address_vouches_for_one_member_only():
    standing = members.MemberStanding()
    standing.note_answer("ee" * 20, ("10.6.6.6", 666))
    # The minted members all name the attacker's answering DHT node; the honest one never answered us.
    flood = _flood(30, NOW)
    honest = entry(_in_bucket(lambda i: f"http://id.example:8084/h{i}.xml", 1)[0], published=NOW - 80,
                   dht_id="01" * 20, address="192.0.2.1:14441")
    ranked = members.rank(flood + [honest], standing, now=NOW)
    assert ranked[0]["idurl"].startswith("http://evil.example")  # the one the answer vouches for
    assert ranked.index(honest) == 2  # the second round of the unanswered: after one minted member


def test_standing_forgets_lapsed_members_and_keeps_established_ones_when_full():
    standing = members.MemberStanding(size=2)
    a, b, c = (entry(f"http://h.example/{n}.xml") for n in "abc")
    standing.note_seen([a, b], NOW)
    standing.note_seen([c], NOW + 10)  # full of live members: c is not recorded
    for later in (300, 600):
        standing.note_seen([a, b], NOW + later)  # they re-announce
    assert standing.senior(a["idurl"], NOW + 600) and not standing.senior(c["idurl"], NOW + 600)
    # b stops announcing and lapses: it is forgotten, and makes room for c.
    standing.note_seen([a], NOW + 1100)
    standing.note_seen([c], NOW + 1300)
    assert standing.senior(a["idurl"], NOW + 1300) and not standing.senior(b["idurl"], NOW + 1300)
    assert not standing.senior(c["idurl"], NOW + 1300)
    standing.note_seen([c], NOW + 1600)
    standing.note_seen([c], NOW + 1300 + members.SENIORITY)
    assert standing.senior(c["idurl"], NOW + 1300 + members.SENIORITY)
    # a has not announced since NOW + 1100 (a lapse): no longer established, and it starts over.
    assert not standing.senior(a["idurl"], NOW + 1300 + members.SENIORITY)
    standing.note_seen([a], NOW + 1300 + members.SENIORITY)
    assert not standing.senior(a["idurl"], NOW + 1300 + members.SENIORITY + 1)
