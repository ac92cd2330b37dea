"""Blocks: seal, any k of N fragments back, tampering caught, fragments rebuilt."""

from __future__ import annotations

import itertools
import os

import pytest

from common.packet import MAX_BLOCK_SIZE, MAX_HEADER_SIZE, MAX_PAYLOAD_SIZE
from services.storage import blocks, fragments
from services.transport.framing import DEFAULT_MAX_FRAME
from common.errors import ConflictError, InvalidArgumentError
from services.storage.catalog import DEGRADED, READY, Block, Catalog, split_remote_path


@pytest.mark.parametrize("size", [0, 1, 1000, 4 * 1024 * 1024 + 1])
def test_any_k_of_n_rebuilds_the_block(size):
    key, plain = os.urandom(32), os.urandom(size)
    sealed = blocks.seal(key, "F1-ab", 3, plain, 4)
    assert len(sealed.fragments) == 4 and blocks.data_shares(4) == 2
    for chosen in itertools.combinations(range(4), 2):
        cipher = blocks.reassemble({p: sealed.fragments[p] for p in chosen}, 4, sealed.cipher_size)
        assert blocks.open_block(key, "F1-ab", 3, cipher) == plain


def test_sealing_into_a_reused_buffer_gives_the_same_fragments():
    key, buffer = os.urandom(32), bytearray(blocks.sealed_size(100_000, 4))
    for block_no, size in enumerate((100_000, 99_999, 1)):
        plain = os.urandom(size)
        fresh = blocks.seal(key, "F1-ab", block_no, plain, 4)
        reused = blocks.seal(key, "F1-ab", block_no, memoryview(plain), 4, buffer)
        assert [bytes(f) for f in reused.fragments] == [bytes(f) for f in fresh.fragments]
        assert reused.hashes == fresh.hashes and reused.cipher_size == fresh.cipher_size == size + blocks.TAG_SIZE
        cipher = blocks.reassemble({2: reused.fragments[2], 1: reused.fragments[1]}, 4, reused.cipher_size)
        assert blocks.open_block(key, "F1-ab", block_no, cipher) == plain


def test_spool_slots_are_rewritten_in_place(tmp_path):
    slots = fragments.SpoolSlots(tmp_path, sets=2, per_set=3)
    first, second = slots.take(), slots.take()
    assert len(set(first) | set(second)) == 6
    fragments.write_slots(first, [b"a" * 10, b"b" * 10, memoryview(b"c" * 10)])
    inode = first[0].stat().st_ino
    fragments.write_slots(first, [b"x" * 4, b"y" * 4, b"z" * 4])
    assert [p.read_bytes() for p in first] == [b"xxxx", b"yyyy", b"zzzz"] and first[0].stat().st_ino == inode
    slots.give(first)
    assert slots.take() == first
    slots.remove()
    assert list(tmp_path.iterdir()) == []


def test_tampered_or_misplaced_fragment_fails_authentication():
    key, plain = os.urandom(32), os.urandom(5000)
    sealed = blocks.seal(key, "F1-ab", 0, plain, 4)
    bad = bytearray(sealed.fragments[0])
    bad[10] ^= 1
    cipher = blocks.reassemble({0: bytes(bad), 1: sealed.fragments[1]}, 4, sealed.cipher_size)
    with pytest.raises(blocks.BlockError):
        blocks.open_block(key, "F1-ab", 0, cipher)
    good = blocks.reassemble({0: sealed.fragments[0], 1: sealed.fragments[1]}, 4, sealed.cipher_size)
    with pytest.raises(blocks.BlockError):
        blocks.open_block(key, "F1-ab", 1, good)  # same bytes presented as another block


def test_rebuild_fragments_matches_the_originals():
    sealed = blocks.seal(os.urandom(32), "F2-cd", 0, os.urandom(70_000), 7)
    shares = {p: sealed.fragments[p] for p in (1, 4, 5, 6)}
    rebuilt = blocks.rebuild_fragments(shares, 7, sealed.cipher_size, [0, 2, 3])
    assert all(rebuilt[p] == sealed.fragments[p] for p in (0, 2, 3))


def test_not_enough_fragments():
    sealed = blocks.seal(os.urandom(32), "F3", 0, b"abc", 4)
    with pytest.raises(blocks.BlockError):
        blocks.reassemble({2: sealed.fragments[2]}, 4, sealed.cipher_size)


def test_ecc_names():
    assert blocks.ecc_map_name(4) == "ecc/4x4" and blocks.suppliers_of("ecc/7x7") == 7
    with pytest.raises(blocks.BlockError):
        blocks.suppliers_of("ecc/4x5")


def test_remote_paths():
    assert split_remote_path("master$a@h_1:docs//a.txt") == ("master$a@h_1", "docs/a.txt")
    for bad in ("no-key", "master$a@h_1:", "master$a@h_1:../x", "x:y"):
        with pytest.raises(InvalidArgumentError):
            split_remote_path(bad)


def test_catalog_export_import(tmp_path):
    one = Catalog(tmp_path / "one.sqlite")
    item, created = one.create("master$a@h_1", "docs/a.txt")
    assert created and one.item("master$a@h_1", "docs").type == "dir"
    with pytest.raises(ConflictError):
        one.create("master$a@h_1", "docs/a.txt")
    version = one.add_version(item, 4096, 4, "wrapped")
    row = Block(version.uid, 0, 10, 26, ["h0", "h1", "h2", "h3"], "1111")
    one.put_block(row)
    one.finish_version(version.uid, READY, 10, 1)
    assert one.settle(version.uid) == READY
    other, _ = one.create("master$a@h_1", "docs/b.txt")
    degraded = one.add_version(other, 4096, 4, "wrapped")
    one.put_block(Block(degraded.uid, 0, 10, 26, ["h0", "h1", "h2", "h3"], "1101"))
    one.finish_version(degraded.uid, READY, 10, 1)
    assert one.settle(degraded.uid) == DEGRADED
    doc = one.export("master$a@h_1")
    two = Catalog(tmp_path / "two.sqlite")
    assert two.import_index(doc) == 2
    copy = two.item("master$a@h_1", "docs/a.txt")
    assert copy is not None and two.latest_ready(copy.id).size == 10
    assert two.blocks(version.uid)[0].hashes == row.hashes
    # Which positions hold which fragment travels with the backup: the degraded version stays so.
    assert two.version(degraded.uid).state == DEGRADED
    assert two.blocks(degraded.uid)[0].missing() == [2]
    assert two.import_index(doc) == 0


@pytest.mark.parametrize("suppliers", [2, 4, 7])
def test_the_largest_block_fits_in_one_packet_for_any_supplier_count(suppliers):
    # One data share (2 suppliers) makes the fragment the whole block plus its tag.
    assert blocks.sealed_size(MAX_BLOCK_SIZE, suppliers) // blocks.data_shares(suppliers) <= MAX_PAYLOAD_SIZE
    assert DEFAULT_MAX_FRAME >= MAX_PAYLOAD_SIZE + MAX_HEADER_SIZE
