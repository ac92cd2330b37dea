"""Key methods on a real bus: create/label/state/erase surviving a restart, models, share and audit."""

from __future__ import annotations

import pytest

from common import codec, crypto, subjects
from common.errors import NodeError
from services.identity import keyshare
from services.identity.keyring import KeyRecord
from services.identity.service import IdentityService
from tests.helpers import await_for, connect, nats_server, running_service
from tests.service.test_identity_support import FakeTransport, configure


async def _raises(coro, status: int, reason: str | None = None) -> NodeError:
    with pytest.raises(NodeError) as err:
        await coro
    assert err.value.status == status, err.value
    if reason is not None:
        assert err.value.reason == reason, err.value
    return err.value


async def _create(bus, name: str, port: int) -> dict:
    return await bus.call("api.identity.identity_create",
                          {"username": name, "preferred_servers": [f"127.0.0.1:{port}"]}, timeout=30)


async def test_key_round_trip_survives_restart(bus_home):
    port = configure(bus_home, idserver=True)
    gid = f"alice@127.0.0.1_{port}"
    async with running_service(bus_home, "identity", IdentityService):
        bus = await connect(bus_home)
        models: list[dict] = []

        async def collect(msg):
            models.append(codec.loads(msg.data))

        await bus.nc.subscribe(subjects.model("key"), cb=collect)
        try:
            await _raises(bus.call("api.identity.key_create", {"key_alias": "share1"}), 404, "identity_not_exist")
            await _create(bus, "alice", port)
            created = await bus.call("api.identity.key_create",
                                     {"key_alias": "share1", "key_size": 1024, "label": "Cats and Dogs",
                                      "include_private": True}, timeout=30)
            assert created["key_id"] == f"share1${gid}" and created["size"] == "1024"
            assert created["private"].startswith("-----BEGIN") and created["label"] == "Cats and Dogs"
            await _raises(bus.call("api.identity.key_create", {"key_alias": "share1"}), 409, "key_exists")
            await _raises(bus.call("api.identity.key_create", {"key_alias": "master"}), 409, "key_exists")
            await _raises(bus.call("api.identity.key_create", {"key_alias": "x", "key_size": 1000}), 400)
            await _raises(bus.call("api.identity.key_create", {"key_alias": "Bad Alias"}), 400)

            labelled = await bus.call("api.identity.key_label", {"key_id": f"share1${gid}", "label": "Man"})
            assert labelled["label"] == "Man"
            state = await bus.call("api.identity.key_state", {"key_id": f"share1${gid}", "active": False})
            assert state["active"] is False
            await bus.call("api.identity.key_create", {"key_alias": "temp"}, timeout=30)
            erased = await bus.call("api.identity.key_erase", {"key_id": f"temp${gid}"})
            assert erased == {"key_id": f"temp${gid}"}
            await _raises(bus.call("api.identity.key_erase", {"key_id": f"temp${gid}"}), 404, "key_not_found")
            await _raises(bus.call("api.identity.key_erase", {"key_id": f"master${gid}"}), 409,
                          "master_key_protected")
            await _raises(bus.call("api.identity.key_get", {"key_id": "nope$bob@h_1"}), 404, "key_not_found")

            await await_for(lambda: _value(len(models) >= 5), what="key model updates")
            assert any(m["id"] == f"temp${gid}" and m.get("deleted") for m in models)
            assert any(m["id"] == f"share1${gid}" and m["data"]["label"] == "Man" for m in models)
            snapshot = await bus.call_internal("identity", "models", model_name="key")
            assert {item["id"] for item in snapshot} == {f"master${gid}", f"share1${gid}"}
        finally:
            await bus.close()

    async with running_service(bus_home, "identity", IdentityService):
        bus = await connect(bus_home)
        try:
            listed = await bus.call("api.identity.keys_list", {"sort": True})
            assert [k["key_id"] for k in listed] == [f"master${gid}", f"share1${gid}"]
            master, share = listed
            assert set(master) == {"active", "alias", "creator", "include_private", "is_public", "key_id",
                                   "label", "private", "public", "size"}
            assert (master["alias"], master["is_public"], master["private"]) == ("master", False, None)
            assert (share["label"], share["active"]) == ("Man", False)
            got = await bus.call("api.identity.key_get", {"key_id": "share1", "include_private": True,
                                                         "generate_signature": True})
            assert got["key_id"] == f"share1${gid}" and got["private"].startswith("-----BEGIN")
            assert got["signature"] and got["signature_pubkey"] == master["public"]
            signed = await bus.call_internal("identity", "sign", data=crypto.b64(b"abc"), key_id=f"share1${gid}")
            assert crypto.verify(crypto.load_public_key(share["public"]), b"abc", crypto.unb64(signed["signature"]))
        finally:
            await bus.close()


async def _value(value):
    return value


async def test_share_and_audit_between_two_nodes(bus_home, tmp_path):
    port = configure(bus_home, idserver=True)
    with nats_server(tmp_path / "bob") as bob_home:
        configure(bob_home)
        async with running_service(bus_home, "identity", IdentityService) as alice_service, \
                running_service(bob_home, "identity", IdentityService):
            alice, bob = await connect(bus_home), await connect(bob_home)
            try:
                await _raises(alice.call("api.identity.key_share",
                                         {"key_id": "master", "trusted_user_id": "bob@127.0.0.1_1"}), 404)
                await _create(alice, "alice", port)
                bob_id = (await _create(bob, "bob", port))["global_id"]
                key = await alice.call("api.identity.key_create", {"key_alias": "group1", "label": "friends"},
                                       timeout=30)
                # No transport process yet: the bus answers 503.
                await _raises(alice.call("api.identity.key_share",
                                         {"key_id": key["key_id"], "trusted_user_id": bob_id}), 503)

                FakeTransport.routes = {f"http://127.0.0.1:{port}/bob.xml": bob,
                                        f"http://127.0.0.1:{port}/alice.xml": alice}
                async with running_service(bus_home, "transport", FakeTransport), \
                        running_service(bob_home, "transport", FakeTransport):
                    # Bob does not hold the key yet: a public audit fails.
                    await _raises(alice.call("api.identity.key_audit",
                                             {"key_id": key["key_id"], "untrusted_user_id": bob_id}, timeout=30),
                                  409, "key_audit_failed")
                    shared = await alice.call("api.identity.key_share",
                                              {"key_id": key["key_id"], "trusted_user_id": bob_id}, timeout=30)
                    assert shared["trusted_user_id"] == bob_id and shared["include_private"] is False
                    held = await bob.call("api.identity.key_get", {"key_id": key["key_id"]})
                    assert held["is_public"] is True and held["public"] == key["public"]
                    assert held["label"] == "friends"
                    audited = await alice.call("api.identity.key_audit",
                                               {"key_id": key["key_id"], "untrusted_user_id": bob_id}, timeout=30)
                    assert audited["audited"] is True
                    await _raises(alice.call("api.identity.key_audit",
                                             {"key_id": key["key_id"], "untrusted_user_id": bob_id,
                                              "is_private": True}, timeout=30), 409, "key_audit_failed")
                    assert "PRIVATE" not in str(FakeTransport.sent)

                    shared = await alice.call("api.identity.key_share",
                                              {"key_id": key["key_id"], "trusted_user_id": f"master${bob_id}",
                                               "include_private": True}, timeout=30)
                    assert shared["include_private"] is True
                    assert "PRIVATE" not in str(FakeTransport.sent)
                    held = await bob.call("api.identity.key_get", {"key_id": key["key_id"], "include_private": True})
                    assert held["is_public"] is False and held["private"].startswith("-----BEGIN")
                    audited = await alice.call("api.identity.key_audit",
                                               {"key_id": key["key_id"], "untrusted_user_id": bob_id,
                                                "is_private": True}, timeout=30)
                    assert audited["is_private"] is True

                    # Bob can wrap to the shared key's public half and alice unwraps; bob unwraps too.
                    wrapped = crypto.b64(crypto.wrap_key(crypto.load_public_key(key["public"]), b"s" * 32))
                    for node in (alice, bob):
                        opened = await node.call_internal("identity", "unwrap", key_id=key["key_id"], data=wrapped)
                        assert crypto.unb64(opened["data"]) == b"s" * 32
                    # Bob cannot plant a key under alice's name (or anyone's but his own) at alice.
                    forged = KeyRecord(key_id=f"planted$alice@127.0.0.1_{port}", public=crypto.generate_private_key(
                        1024).public_key(), label="mine now", creator=f"http://127.0.0.1:{port}/bob.xml")
                    payload = keyshare.build_key_payload(forged, crypto.load_public_key(
                        (await alice.call_internal("identity", "my_identity"))["publickey"]), False, False)
                    with pytest.raises(keyshare.ShareError, match="only its owner"):
                        await alice_service.receive_key({"creator_idurl": f"http://127.0.0.1:{port}/bob.xml",
                                                         "payload": payload})
                    await _raises(alice.call("api.identity.key_get", {"key_id": forged.key_id}), 404)
                    # Another node's master key is derived from its fetched identity.
                    alice_master = await bob.call_internal("identity", "public_key",
                                                           key_id=f"master$alice@127.0.0.1_{port}")
                    assert alice_master["public"] == (await alice.call_internal("identity", "my_identity"))["publickey"]
                    await _raises(bob.call_internal("identity", "public_key", key_id=f"other$alice@127.0.0.1_{port}"),
                                  404, "key_not_found")
            finally:
                await alice.close()
                await bob.close()
