"""The identity process on a real bus: create, fetch, verify, ID server rules, backup/recover, rotate."""

from __future__ import annotations

import asyncio
import stat

import aiohttp
import pytest

from common import codec, crypto, subjects
from common.config_store import ConfigStore
from common.errors import NodeError
from services.identity import document
from services.identity.service import IdentityService
from tests.helpers import await_for, connect, nats_server, running_service
from tests.service.test_identity_support import FakeDht, configure


async def _upload(port: int, body: bytes) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{port}/upload", data=body) as resp:
            return resp.status, await resp.json(content_type=None)


async def _raises(coro, status: int, reason: str | None = None) -> NodeError:
    with pytest.raises(NodeError) as err:
        await coro
    assert err.value.status == status, err.value
    if reason is not None:
        assert err.value.reason == reason, err.value
    return err.value


async def test_create_fetch_sign_verify_and_events(bus_home):
    port = configure(bus_home, idserver=True)
    FakeDht.published = []
    async with running_service(bus_home, "identity", IdentityService), \
            running_service(bus_home, "dht", FakeDht):
        bus = await connect(bus_home)
        events: list[dict] = []

        async def collect(msg):
            events.append(codec.loads(msg.data))

        await bus.nc.subscribe(subjects.EVENTS_ALL, cb=collect)
        try:
            await _raises(bus.call_internal("identity", "my_identity"), 404, "identity_not_exist")
            await _raises(bus.call("api.identity.identity_get", {}), 404, "identity_not_exist")
            await _raises(bus.call("api.identity.identity_create", {"username": "Bad Name!"}), 400,
                          "invalid_argument")
            await _raises(bus.call("api.identity.identity_create", {"username": "alice"}), 400,
                          "no_identity_servers")

            created = await bus.call("api.identity.identity_create",
                                     {"username": "alice", "preferred_servers": [f"127.0.0.1:{port}"]}, timeout=30)
            idurl = f"http://127.0.0.1:{port}/alice.xml"
            assert created["idurl"] == idurl and created["global_id"] == f"alice@127.0.0.1_{port}"
            assert created["sources"] == [idurl] and created["revision"] == "1"
            tcp_port = ConfigStore(bus_home.options_file).get("services/tcp-connections/tcp-port")
            assert created["contacts"] == [f"tcp://127.0.0.1:{tcp_port}"]
            await _raises(bus.call("api.identity.identity_create",
                                   {"username": "alice2", "preferred_servers": [f"127.0.0.1:{port}"]}), 409,
                          "identity_exists")

            mine = await bus.call_internal("identity", "my_identity")
            assert mine["revision"] == 1 and mine["name"] == "alice" and mine["publickey"].startswith("ssh-rsa")
            got = await bus.call("api.identity.identity_get", {"include_xml_source": True})
            assert document.parse_verified(got["xml"]).idurl == idurl and got["signature"]

            # The ID server serves the document and the fetch verifies it.
            async with aiohttp.ClientSession() as http, http.get(idurl) as resp:
                assert resp.status == 200 and document.parse_verified(await resp.read()).publickey == mine["publickey"]
            assert await bus.call_internal("identity", "fetch", idurl=idurl, refresh=True) == mine

            data = crypto.b64(b"hello bitdust")
            signed = await bus.call_internal("identity", "sign", data=data)
            assert signed["key_id"] == f"master$alice@127.0.0.1_{port}"
            assert await bus.call_internal("identity", "verify", data=data, signature=signed["signature"],
                                           idurl=idurl) is True
            assert await bus.call_internal("identity", "verify", data=crypto.b64(b"other"),
                                           signature=signed["signature"], idurl=idurl) is False
            await _raises(bus.call_internal("identity", "sign", data="%%%"), 400)
            await _raises(bus.call_internal("identity", "sign", data=data, key_id="nope$alice@127.0.0.1_1"), 404,
                          "key_not_found")
            public = await bus.call_internal("identity", "public_key", key_id=signed["key_id"])
            assert public == {"key_id": signed["key_id"], "public": mine["publickey"]}

            wrapped = crypto.wrap_key(crypto.load_public_key(mine["publickey"]), b"k" * 32)
            unwrapped = await bus.call_internal("identity", "unwrap", key_id=signed["key_id"],
                                                data=crypto.b64(wrapped))
            assert crypto.unb64(unwrapped["data"]) == b"k" * 32
            await _raises(bus.call_internal("identity", "unwrap", key_id=signed["key_id"], data=crypto.b64(b"x")),
                          400, "unwrap_failed")

            # Messages are sealed and opened here (the messaging process loads no cipher).
            aad = crypto.b64(b'{"message_id":"private_1"}')
            sealed = await bus.call_internal("identity", "seal", public_key=mine["publickey"],
                                             data=crypto.b64(b'{"text":"hi"}'), aad=aad)
            assert b"hi" not in crypto.unb64(sealed["body"])
            opened = await bus.call_internal("identity", "open", key=sealed["key"], body=sealed["body"], aad=aad)
            assert crypto.unb64(opened["data"]) == b'{"text":"hi"}'
            for altered in ({"aad": crypto.b64(b"{}")}, {"key": crypto.b64(b"x" * 256)},
                            {"body": crypto.b64(crypto.unb64(sealed["body"])[:-1] + b"?")}):
                await _raises(bus.call_internal("identity", "open", **{**sealed, "aad": aad, **altered}),
                              400, "undecryptable")
            await _raises(bus.call_internal("identity", "seal", public_key="ssh-rsa AAAA", data=aad, aad=aad),
                          400, "invalid_key")
            await _raises(bus.call_internal("identity", "open", key=sealed["key"], body="%%%", aad=aad), 400)
            await _raises(bus.call_internal("identity", "fetch", idurl=f"http://127.0.0.1:{port}/nobody.xml"),
                          404, "identity_not_found")

            await await_for(lambda: _async(FakeDht.published), what="nickname published")
            assert FakeDht.published[0] == {"nickname": "alice", "idurl": idurl}
            ids_seen = {e["event_id"] for e in events}
            assert {"local-identity-created", "local-identity-written"} <= ids_seen
        finally:
            await bus.close()


async def _async(value):
    return value


async def test_identity_server_refuses_forgeries(bus_home, tmp_path):
    port = configure(bus_home, idserver=True)
    async with running_service(bus_home, "identity", IdentityService):
        bus = await connect(bus_home)
        try:
            await bus.call("api.identity.identity_create",
                           {"username": "alice", "preferred_servers": [f"127.0.0.1:{port}"]}, timeout=30)
            xml = (await bus.call("api.identity.identity_get", {"include_xml_source": True}))["xml"]
            doc = document.parse_verified(xml)
            intruder = crypto.generate_private_key(1024)

            status, body = await _upload(port, xml.replace("tcp://", "udp://").encode())
            assert (status, body["error"]["reason"]) == (400, "invalid_signature")
            stolen = document.new_document(list(doc.sources), ["tcp://6.6.6.6:1"], intruder, revision=99)
            status, body = await _upload(port, stolen.to_xml().encode())
            assert (status, body["error"]["reason"]) == (409, "name_taken")
            status, body = await _upload(port, b"<identity>" + b"x" * 70000 + b"</identity>")
            assert status == 413
            status, body = await _upload(port, xml.encode())
            assert (status, body["changed"]) == (200, False)

            # A second node that wants the same name on this server is refused with 409 name_taken.
            with nats_server(tmp_path / "other") as other_home:
                configure(other_home)
                async with running_service(other_home, "identity", IdentityService):
                    other = await connect(other_home)
                    try:
                        await _raises(other.call("api.identity.identity_create",
                                                 {"username": "alice", "preferred_servers": [f"127.0.0.1:{port}"]},
                                                 timeout=30), 409, "name_taken")
                        await _raises(other.call("api.identity.identity_get", {}), 404, "identity_not_exist")
                    finally:
                        await other.close()

            # A tampered document on the server is not accepted by fetchers.
            served = bus_home.state("identity") / "idserver" / "alice.xml"
            served.write_text(xml.replace("tcp://", "udp://"))
            with nats_server(tmp_path / "third") as third_home:
                configure(third_home)
                async with running_service(third_home, "identity", IdentityService):
                    third = await connect(third_home)
                    try:
                        await _raises(third.call_internal("identity", "fetch", idurl=doc.idurl), 404,
                                      "identity_not_found")
                        assert await third.call("api.identity.identity_cache_list", {}) == []
                    finally:
                        await third.close()
        finally:
            await bus.close()


async def test_backup_erase_recover_on_a_fresh_home(bus_home, tmp_path):
    port = configure(bus_home, idserver=True)
    backup = tmp_path / "backup" / "alice.key"
    async with running_service(bus_home, "identity", IdentityService):
        bus = await connect(bus_home)
        try:
            created = await bus.call("api.identity.identity_create",
                                     {"username": "alice", "preferred_servers": [f"127.0.0.1:{port}"]}, timeout=30)
            saved = await bus.call("api.identity.identity_backup", {"destination_filepath": str(backup)})
            assert saved["destination_filepath"] == str(backup)
            assert stat.S_IMODE(backup.stat().st_mode) == 0o600
            assert backup.read_text().startswith(created["idurl"] + "\n-----BEGIN PRIVATE KEY-----")
            erased = await bus.call("api.identity.identity_erase", {"erase_private_key": True})
            assert erased["private_key_erased"] is True
            await _raises(bus.call("api.identity.identity_get", {}), 404, "identity_not_exist")
            await _raises(bus.call("api.identity.identity_backup", {"destination_filepath": str(backup)}), 404)
        finally:
            await bus.close()

        with nats_server(tmp_path / "fresh") as fresh_home:
            configure(fresh_home)
            async with running_service(fresh_home, "identity", IdentityService):
                fresh = await connect(fresh_home)
                try:
                    wrong = crypto.private_key_to_pem(crypto.generate_private_key(1024)).decode()
                    await _raises(fresh.call("api.identity.identity_recover",
                                             {"private_key_source": created["idurl"] + "\n" + wrong}, timeout=30),
                                  400, "key_mismatch")
                    await _raises(fresh.call("api.identity.identity_recover", {"private_key_source": wrong}), 400,
                                  "idurl_missing")
                    recovered = await fresh.call("api.identity.identity_recover",
                                                 {"private_key_source": str(backup)}, timeout=30)
                    assert recovered["idurl"] == created["idurl"]
                    assert recovered["publickey"] == created["publickey"]
                    signed = await fresh.call_internal("identity", "sign", data=crypto.b64(b"x"))
                    assert crypto.verify(crypto.load_public_key(created["publickey"]), b"x",
                                         crypto.unb64(signed["signature"]))
                    await _raises(fresh.call("api.identity.identity_recover",
                                             {"private_key_source": backup.read_text()}), 409, "identity_exists")
                finally:
                    await fresh.close()


async def test_rotate_moves_to_another_server_and_fetchers_follow(bus_home, tmp_path):
    with nats_server(tmp_path / "server2") as home2:
        port2 = configure(home2, idserver=True)
        port1 = configure(bus_home, idserver=True,
                          **{"services/identity-propagate/known-servers": f"127.0.0.1:{port2}"})
        async with running_service(bus_home, "identity", IdentityService), \
                running_service(home2, "identity", IdentityService):
            bus, bus2 = await connect(bus_home), await connect(home2)
            try:
                created = await bus.call("api.identity.identity_create",
                                         {"username": "alice", "preferred_servers": [f"127.0.0.1:{port1}"]},
                                         timeout=30)
                key = await bus.call("api.identity.key_create", {"key_alias": "share1"}, timeout=30)
                fetched = await bus2.call_internal("identity", "fetch", idurl=created["idurl"])
                assert fetched["revision"] == 1

                rotated = await bus.call("api.identity.identity_rotate", {}, timeout=30)
                new_idurl = f"http://127.0.0.1:{port2}/alice.xml"
                assert rotated["idurl"] == new_idurl and rotated["revision"] == "2"
                assert rotated["old_idurl"] == created["idurl"]
                keys = {k["key_id"] for k in await bus.call("api.identity.keys_list", {})}
                assert keys == {f"master$alice@127.0.0.1_{port2}", f"share1$alice@127.0.0.1_{port2}"}
                assert key["key_id"] not in keys

                # The old server now serves revision 2, so a fetch of the old IDURL follows it.
                followed = await bus2.call_internal("identity", "fetch", idurl=created["idurl"], refresh=True)
                assert followed["idurl"] == new_idurl and followed["revision"] == 2
                listed = await bus2.call("api.identity.identity_cache_list", {})
                assert [item["idurl"] for item in listed] == [new_idurl]
                await _raises(bus.call("api.identity.identity_rotate", {}, timeout=30), 409, "no_identity_server")
            finally:
                await bus.close()
                await bus2.close()


async def test_identity_server_follows_its_options(bus_home):
    port = configure(bus_home, idserver=False)
    async with running_service(bus_home, "identity", IdentityService) as service:
        assert service.idserver is None
        service.ctx.config.set("services/identity-server/enabled", True)
        await service.on_config_changed(["services/identity-server/enabled"])
        assert service.idserver is not None and service.idserver.port == port
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as resp:
            assert resp.status == 200 and (await resp.json()) == {"identities": []}
        service.ctx.config.set("services/identity-server/enabled", False)
        await service.on_config_changed(["services/identity-server/enabled"])
        assert service.idserver is None
        with pytest.raises(aiohttp.ClientError):
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/"):
                pass


async def test_identity_persists_across_restart(bus_home):
    port = configure(bus_home, idserver=True)
    async with running_service(bus_home, "identity", IdentityService):
        bus = await connect(bus_home)
        try:
            created = await bus.call("api.identity.identity_create",
                                     {"username": "carol", "preferred_servers": [f"127.0.0.1:{port}"]}, timeout=30)
        finally:
            await bus.close()
    async with running_service(bus_home, "identity", IdentityService):
        bus = await connect(bus_home)
        try:
            again = await bus.call("api.identity.identity_get", {})
            assert again == created
            mode = stat.S_IMODE((bus_home.state("identity") / "keys" / "master.pem").stat().st_mode)
            assert mode == 0o600
        finally:
            await bus.close()
    await asyncio.sleep(0)


async def test_fetch_shares_downloads_and_falls_back_to_cache(bus_home, tmp_path, monkeypatch):
    port = configure(bus_home, idserver=True)
    with nats_server(tmp_path / "reader") as reader_home:
        configure(reader_home)
        async with running_service(bus_home, "identity", IdentityService) as server_side, \
                running_service(reader_home, "identity", IdentityService) as reader:
            bus, other = await connect(bus_home), await connect(reader_home)
            try:
                created = await bus.call("api.identity.identity_create",
                                         {"username": "dave", "preferred_servers": [f"127.0.0.1:{port}"]},
                                         timeout=30)
                downloads: list[str] = []
                original = reader.client.download

                async def counting(idurl: str) -> bytes:
                    downloads.append(idurl)
                    return await original(idurl)

                monkeypatch.setattr(reader.client, "download", counting)
                results = await asyncio.gather(*(other.call_internal("identity", "fetch", idurl=created["global_id"])
                                                 for _ in range(5)))
                assert {r["idurl"] for r in results} == {created["idurl"]} and downloads == [created["idurl"]]

                # Identity server gone and the cached copy is stale: the cached copy is still served...
                server_side.ctx.config.set("services/identity-server/enabled", False)
                await server_side.on_config_changed(["services/identity-server/enabled"])
                monkeypatch.setattr("services.identity.peer_identities.CACHE_TTL", 0.0)
                stale = await other.call_internal("identity", "fetch", idurl=created["idurl"])
                assert stale["publickey"] == created["publickey"] and len(downloads) == 2
                # ...but not when the caller insists on a fresh copy.
                await _raises(other.call_internal("identity", "fetch", idurl=created["idurl"], refresh=True), 404,
                              "identity_not_found")
            finally:
                await bus.close()
                await other.close()
