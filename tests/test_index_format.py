"""Unit and property tests for the vault format (coldvault.index).

Round trips for every stored structure, and hostile input: whatever bytes a
store hands back, a decoder either succeeds or raises FormatError /
UnknownVersionError (both ColdvaultError, so the CLI prints one line and a
documented exit code). Any other exception escaping here is a bug.
"""

from __future__ import annotations

import os
import struct

import msgpack
import pytest
import xxhash
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coldvault.errors import ColdvaultError, ExitCode
from coldvault.index import blob, config, crypto, envelope, limits, pack, packindex, snapshot, tree
from coldvault.index.crypto import MasterKeys, Sealer
from coldvault.index.errors import AuthenticationError, FormatError, UnknownVersionError
from coldvault.index.ids import ID_LEN, blob_id, content_id

FAST_SCRYPT = {"n": 2**10, "r": 8, "p": 1}
KEYS = MasterKeys.generate()
PLAIN = Sealer(None)
SEALED = Sealer(KEYS)
DECODE_ERRORS = (FormatError, UnknownVersionError)

# Modest example counts and no deadline: the whole file runs in a few seconds.
prop = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
hostile = settings(
    max_examples=150, deadline=None, report_multiple_bugs=False, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(params=["plain", "sealed"])
def sealer(request) -> Sealer:
    return PLAIN if request.param == "plain" else SEALED


def sealers() -> st.SearchStrategy[Sealer]:
    return st.sampled_from([PLAIN, SEALED])


def zstd_frame_claiming(size: int) -> bytes:
    """A zstd frame whose header claims `size` bytes of content, followed by one empty raw block."""
    single_segment_fcs8 = 0xE0  # Frame_Content_Size_flag = 3 (8 bytes), Single_Segment_flag = 1
    return b"\x28\xb5\x2f\xfd" + bytes((single_segment_fcs8,)) + struct.pack("<Q", size) + b"\x01\x00\x00"


def raises_only_decode_errors(fn, *args):
    """Call `fn`; a decode error is fine, success is fine, anything else propagates."""
    try:
        return fn(*args)
    except DECODE_ERRORS as exc:
        assert isinstance(exc, ColdvaultError)
        assert str(exc)
        return None


# -- strategies for msgpack documents --------------------------------------------------------

msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=24)
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Values that compare equal after a msgpack round trip (no NaN).
msgpack_docs = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=24),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
ids16 = st.binary(min_size=ID_LEN, max_size=ID_LEN)


def doc_like(valid: dict, changes: int = 2) -> st.SearchStrategy[dict]:
    """A valid map of a structure (`valid` gives a strategy per key) with a few keys
    replaced by arbitrary values or dropped, so decoders are reached past their first checks."""
    valid = {"version": st.just(1), "features": st.just([]), **valid}
    keys = sorted(valid) + ["extra"]
    return st.tuples(
        st.fixed_dictionaries(valid),
        st.dictionaries(st.sampled_from(keys), msgpack_values, max_size=changes),
        st.sets(st.sampled_from(keys), max_size=1),
    ).map(lambda t: {k: v for k, v in {**t[0], **t[1]}.items() if k not in t[2]})


def envelope_bytes(kind: str, docs: st.SearchStrategy, sealer: Sealer = PLAIN) -> st.SearchStrategy[bytes]:
    """Envelopes around hostile documents: mostly well-formed wrapping (so the decoder
    behind the envelope is reached), sometimes a hand-made header and body, or noise."""
    sealed = st.tuples(docs, st.booleans()).map(lambda t: envelope.seal(t[0], kind, sealer, compress=t[1]))
    handmade = st.tuples(
        st.integers(0, 2),
        st.integers(0, 255) | st.sampled_from([0, 1, 2, 3]),
        st.one_of(
            st.binary(max_size=64),
            docs.map(limits.pack),
            docs.map(lambda d: zstandard.compress(limits.pack(d))),
        ),
    ).map(lambda t: envelope.MAGIC + bytes((t[0], t[1])) + t[2])
    return st.one_of(sealed, sealed, sealed, handmade, st.binary(max_size=64))


# -- blobs -----------------------------------------------------------------------------------


@prop
@given(data=st.binary(max_size=8192), s=sealers(), level=st.sampled_from([3, None]))
def test_blob_round_trip(data, s, level):
    bid = blob_id(data, s.id_key)
    stored = blob.encode(data, bid, s, level)
    assert bool(stored[0] & blob.ENCRYPTED) == s.encrypted
    assert blob.decode(stored, bid, s, "blob") == data
    assert blob.decode(stored, bid, s, "blob", raw_length=len(data)) == data


@prop
@given(data=st.binary(max_size=1024))
def test_blob_round_trip_memoryview_input(data):
    # The chunker hands memoryviews of the file buffer to the encoder.
    bid = blob_id(memoryview(data), SEALED.id_key)
    assert bid == blob_id(data, SEALED.id_key)
    stored = blob.encode(memoryview(data), bid, SEALED, 3)
    assert blob.decode(memoryview(stored), bid, SEALED, "blob") == data


def test_blob_ids_are_keyed_only_when_encrypted():
    data = b"some chunk"
    assert blob_id(data, None) == xxhash.xxh3_128_digest(data)
    assert blob_id(data, KEYS.id_key) != blob_id(data, None)
    assert blob_id(data, KEYS.id_key) != blob_id(data, MasterKeys.generate().id_key)
    assert len(blob_id(data, KEYS.id_key)) == ID_LEN


def test_compressible_blob_is_compressed(sealer):
    data = b"coldvault " * 1000
    bid = blob_id(data, sealer.id_key)
    stored = blob.encode(data, bid, sealer, 3)
    assert stored[0] & blob.COMPRESSED
    assert len(stored) < len(data) // 10
    assert blob.decode(stored, bid, sealer, "blob", raw_length=len(data)) == data


@pytest.mark.parametrize("data", [os.urandom(4096), b"x" * 63], ids=["incompressible", "too-small"])
def test_blob_not_compressed(sealer, data):
    bid = blob_id(data, sealer.id_key)
    stored = blob.encode(data, bid, sealer, 3)
    assert not stored[0] & blob.COMPRESSED
    assert blob.decode(stored, bid, sealer, "blob") == data


def test_blob_level_none_never_compresses(sealer):
    data = b"a" * 10000
    stored = blob.encode(data, blob_id(data, sealer.id_key), sealer, None)
    assert not stored[0] & blob.COMPRESSED
    assert len(stored) >= len(data)


@prop
@given(data=st.binary(max_size=2048), s=sealers(), level=st.sampled_from([3, None]), other=ids16)
def test_blob_wrong_id(data, s, level, other):
    bid = blob_id(data, s.id_key)
    stored = blob.encode(data, bid, s, level)
    if other != bid:
        with pytest.raises(AuthenticationError):
            blob.decode(stored, other, s, "blob")


BLOB_SAMPLES = [
    pytest.param(b"hello world " * 40, 3, id="compressed"),
    pytest.param(os.urandom(300), 3, id="incompressible"),
    pytest.param(b"hello world " * 40, None, id="uncompressed"),
    pytest.param(b"x", 3, id="one-byte"),
    pytest.param(b"", 3, id="empty"),
]


@pytest.mark.parametrize(("data", "level"), BLOB_SAMPLES)
def test_blob_any_flipped_byte_is_detected(sealer, data, level):
    """Every position, several masks. An encrypted blob must always fail. An unencrypted
    compressed one may only decode if the result still matches its id, i.e. is the
    original plaintext (zstd ignores a reserved header bit)."""
    bid = blob_id(data, sealer.id_key)
    stored = blob.encode(data, bid, sealer, level)
    for i in range(len(stored)):
        for mask in (0x01, 0x02, 0x04, 0x10, 0x40, 0x80, 0xFF):
            damaged = bytearray(stored)
            damaged[i] ^= mask
            try:
                out = blob.decode(bytes(damaged), bid, sealer, "blob")
            except FormatError:
                continue
            assert not sealer.encrypted, f"flip {mask:#x} at {i} passed authentication"
            assert out == data, f"flip {mask:#x} at {i} returned wrong data"


@pytest.mark.parametrize(("data", "level"), BLOB_SAMPLES)
def test_blob_truncated(sealer, data, level):
    bid = blob_id(data, sealer.id_key)
    stored = blob.encode(data, bid, sealer, level)
    for n in range(len(stored)):
        with pytest.raises(FormatError):
            blob.decode(stored[:n], bid, sealer, "blob")


@pytest.mark.parametrize("bit", range(2, 8))
def test_blob_unknown_flag_bits(sealer, bit):
    data = b"chunk data " * 20
    bid = blob_id(data, sealer.id_key)
    stored = bytearray(blob.encode(data, bid, sealer, 3))
    stored[0] |= 1 << bit
    with pytest.raises(FormatError, match="unknown blob flags"):
        blob.decode(bytes(stored), bid, sealer, "blob")


def test_encrypted_blob_in_unencrypted_vault():
    data = b"secret"
    bid = blob_id(data, KEYS.id_key)
    stored = blob.encode(data, bid, SEALED, 3)
    with pytest.raises(FormatError):
        blob.decode(stored, bid, PLAIN, "blob")


def test_unencrypted_blob_in_encrypted_vault():
    # Without this check an attacker could swap in plaintext blobs; the id is keyed, but refuse early.
    data = b"not secret"
    stored = blob.encode(data, blob_id(data, None), PLAIN, 3)
    with pytest.raises(AuthenticationError):
        blob.decode(stored, blob_id(data, KEYS.id_key), SEALED, "blob")


def test_blob_from_other_vault_fails():
    data = b"chunk"
    other = Sealer(MasterKeys.generate())
    bid = blob_id(data, other.id_key)
    stored = blob.encode(data, bid, other, 3)
    with pytest.raises(AuthenticationError):
        blob.decode(stored, bid, SEALED, "blob")


def test_blob_raw_length_mismatch(sealer):
    for data, level in ((b"abc" * 100, 3), (b"abc" * 100, None)):
        bid = blob_id(data, sealer.id_key)
        stored = blob.encode(data, bid, sealer, level)
        for wrong in (len(data) - 1, len(data) + 1, 0):
            with pytest.raises(FormatError):
                blob.decode(stored, bid, sealer, "blob", raw_length=wrong)


def test_blob_empty_input():
    with pytest.raises(FormatError, match="empty blob"):
        blob.decode(b"", b"\0" * ID_LEN, PLAIN, "blob")


@pytest.mark.parametrize("raw_length", [None, 10])
def test_blob_zstd_frame_claiming_huge_size(raw_length):
    """A frame header may claim any content size; decoding must not try to allocate it."""
    body = zstd_frame_claiming(2**44)
    with pytest.raises(FormatError):
        blob.decode(bytes((blob.COMPRESSED,)) + body, b"\0" * ID_LEN, PLAIN, "blob", raw_length=raw_length)


@hostile
@given(stored=st.binary(max_size=256), bid=ids16, s=sealers(), raw_length=st.none() | st.integers(0, 4096))
def test_blob_decode_arbitrary_bytes(stored, bid, s, raw_length):
    raises_only_decode_errors(blob.decode, stored, bid, s, "blob", raw_length)


# -- envelopes -------------------------------------------------------------------------------

KINDS = ["config", "settings", "index", "snapshot", "pack-header", "lock"]


@prop
@given(doc=msgpack_docs, kind=st.sampled_from(KINDS), s=sealers(), compress=st.booleans())
def test_envelope_round_trip(doc, kind, s, compress):
    sealed = envelope.seal(doc, kind, s, compress=compress)
    assert sealed[:2] == envelope.MAGIC
    assert sealed[2] == envelope.VERSION
    assert envelope.open_(sealed, kind, s, kind) == doc


@pytest.mark.parametrize("kind", KINDS)
def test_envelope_large_doc_is_compressed(sealer, kind):
    doc = {"blobs": [[b"\0" * 16, 0, i, 100, 100] for i in range(200)]}
    sealed = envelope.seal(doc, kind, sealer)
    assert sealed[3] & blob.COMPRESSED
    assert bool(sealed[3] & blob.ENCRYPTED) == sealer.encrypted
    assert len(sealed) < len(limits.pack(doc))
    assert envelope.open_(sealed, kind, sealer, kind) == doc


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("other", KINDS)
def test_envelope_kind_is_bound_when_encrypted(kind, other):
    sealed = envelope.seal({"version": 1}, kind, SEALED)
    if other == kind:
        assert envelope.open_(sealed, other, SEALED, other) == {"version": 1}
    else:
        with pytest.raises(AuthenticationError):
            envelope.open_(sealed, other, SEALED, other)


def test_envelope_wrong_key():
    sealed = envelope.seal({"version": 1}, "index", SEALED)
    with pytest.raises(AuthenticationError):
        envelope.open_(sealed, "index", Sealer(MasterKeys.generate()), "index")


@pytest.mark.parametrize("data", [b"", b"C", b"CV", b"CV\x01", b"XX\x01\x00\x80", b"cv\x01\x00\x80", b"\x80"])
def test_envelope_bad_magic(data):
    with pytest.raises(FormatError):
        envelope.open_(data, "index", PLAIN, "index")


@pytest.mark.parametrize("version", [2, 3, 255])
def test_envelope_newer_version(sealer, version):
    sealed = bytearray(envelope.seal({"version": 1}, "index", sealer))
    sealed[2] = version
    with pytest.raises(UnknownVersionError, match=f"version {version}"):
        envelope.open_(bytes(sealed), "index", sealer, "index")


@pytest.mark.parametrize("bit", range(2, 8))
def test_envelope_unknown_flags(sealer, bit):
    sealed = bytearray(envelope.seal({"version": 1}, "index", sealer))
    sealed[3] |= 1 << bit
    with pytest.raises(FormatError, match="unknown envelope flags"):
        envelope.open_(bytes(sealed), "index", sealer, "index")


def test_envelope_encrypted_without_key():
    sealed = envelope.seal({"version": 1}, "snapshot", SEALED)
    with pytest.raises(FormatError):
        envelope.open_(sealed, "snapshot", PLAIN, "snapshot")


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "config"])
def test_envelope_unencrypted_in_encrypted_vault(kind):
    sealed = envelope.seal({"version": 1}, kind, PLAIN)
    with pytest.raises(FormatError):
        envelope.open_(sealed, kind, SEALED, kind)


def test_envelope_config_is_readable_without_key():
    sealed = envelope.seal({"version": 1}, "config", PLAIN, compress=False)
    assert envelope.open_(sealed, "config", SEALED, "config") == {"version": 1}


@pytest.mark.parametrize("compress", [True, False])
def test_envelope_flipped_byte_encrypted(compress):
    doc = {"version": 1, "packs": [{"id": b"\1" * 16, "blobs": list(range(100))}]}
    sealed = envelope.seal(doc, "index", SEALED, compress=compress)
    for i in range(len(sealed)):
        damaged = bytearray(sealed)
        damaged[i] ^= 0x04
        try:
            out = envelope.open_(bytes(damaged), "index", SEALED, "index")
        except DECODE_ERRORS:
            continue
        pytest.fail(f"flip at {i} passed: {out!r:.60}")


@pytest.mark.parametrize("kind", ["index", "snapshot"])
def test_envelope_truncated(sealer, kind):
    sealed = envelope.seal({"version": 1, "x": list(range(300))}, kind, sealer)
    for n in range(len(sealed)):
        with pytest.raises(FormatError):
            envelope.open_(sealed[:n], kind, sealer, kind)


def test_envelope_zstd_frame_claiming_huge_size():
    """A hostile compressed envelope must fail as FormatError, without allocating what the frame claims."""
    data = envelope.MAGIC + bytes((envelope.VERSION, blob.COMPRESSED)) + zstd_frame_claiming(2**44)
    with pytest.raises(FormatError):
        envelope.open_(data, "index", PLAIN, "index")


@hostile
@given(data=st.data(), kind=st.sampled_from(KINDS), s=sealers(), t=sealers())
def test_envelope_open_arbitrary_bytes(data, kind, s, t):
    sealed = data.draw(envelope_bytes(kind, msgpack_values, s))
    raises_only_decode_errors(envelope.open_, sealed, kind, t, kind)


@hostile
@given(data=st.binary(max_size=128))
def test_envelope_open_arbitrary_body(data):
    for flags in range(4):
        raises_only_decode_errors(envelope.open_, b"CV\x01" + bytes((flags,)) + data, "index", PLAIN, "index")
        raises_only_decode_errors(envelope.open_, b"CV\x01" + bytes((flags,)) + data, "index", SEALED, "index")


# -- keys ------------------------------------------------------------------------------------

VAULT_ID = b"v" * 16


def test_keys_wrap_unwrap():
    keys = MasterKeys.generate()
    key = crypto.wrap_keys(keys, b"correct horse", VAULT_ID, params=FAST_SCRYPT)
    assert key["kdf"] == "scrypt" and (key["n"], key["r"], key["p"]) == (2**10, 8, 1)
    assert len(key["salt"]) == 32
    assert keys.enc_key not in key["wrapped"] and keys.id_key not in key["wrapped"]
    assert crypto.unwrap_keys(key, b"correct horse", VAULT_ID) == keys
    # The key map survives the config's msgpack round trip.
    assert crypto.unwrap_keys(limits.unpack(limits.pack(key), "key"), b"correct horse", VAULT_ID) == keys


@pytest.mark.parametrize("password", [b"", b"correct hors", b"correct horse ", b"Correct horse"])
def test_keys_wrong_password(password):
    key = crypto.wrap_keys(MasterKeys.generate(), b"correct horse", VAULT_ID, params=FAST_SCRYPT)
    assert crypto.unwrap_keys(key, password, VAULT_ID) is None


def test_keys_bound_to_vault_id():
    key = crypto.wrap_keys(MasterKeys.generate(), b"pw", VAULT_ID, params=FAST_SCRYPT)
    assert crypto.unwrap_keys(key, b"pw", b"w" * 16) is None


def test_keys_wrapping_is_salted():
    keys = MasterKeys.generate()
    a = crypto.wrap_keys(keys, b"pw", VAULT_ID, params=FAST_SCRYPT)
    b = crypto.wrap_keys(keys, b"pw", VAULT_ID, params=FAST_SCRYPT)
    assert a["salt"] != b["salt"] and a["wrapped"] != b["wrapped"]


def test_keys_never_printed():
    keys = MasterKeys.generate()
    assert keys.enc_key.hex() not in repr(keys) and "secret" in repr(keys)


def test_keys_tampered_wrapped_blob():
    key = crypto.wrap_keys(MasterKeys.generate(), b"pw", VAULT_ID, params=FAST_SCRYPT)
    for i in (0, 12, len(key["wrapped"]) - 1):
        damaged = bytearray(key["wrapped"])
        damaged[i] ^= 1
        assert crypto.unwrap_keys({**key, "wrapped": bytes(damaged)}, b"pw", VAULT_ID) is None
    assert crypto.unwrap_keys({**key, "wrapped": key["wrapped"][:5]}, b"pw", VAULT_ID) is None


def _key_map(**changes) -> dict:
    key = {"kdf": "scrypt", **FAST_SCRYPT, "salt": b"s" * 32, "wrapped": b"w" * 60}
    key.update(changes)
    return {k: v for k, v in key.items() if v is not ...}


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(_key_map(kdf="argon2"), id="unknown-kdf"),
        pytest.param(_key_map(kdf=...), id="no-kdf"),
        pytest.param(_key_map(n=0), id="n-zero"),
        pytest.param(_key_map(n="1024"), id="n-str"),
        pytest.param(_key_map(r=2**30), id="r-huge"),
        pytest.param(_key_map(p=...), id="no-p"),
        pytest.param(_key_map(salt="salt"), id="salt-str"),
        pytest.param(_key_map(wrapped=None), id="wrapped-none"),
        # The config is read before anything is authenticated: scrypt's own
        # refusals must come out as FormatError too.
        pytest.param(_key_map(n=3), id="n-not-power-of-two"),
        pytest.param(_key_map(n=2**24, r=2**10), id="n-r-needs-2TiB"),
    ],
)
def test_keys_hostile_key_map(key):
    with pytest.raises(FormatError):
        crypto.unwrap_keys(key, b"pw", VAULT_ID)


# -- packs -----------------------------------------------------------------------------------


def _blob_list(draw_data: list[bytes], s: Sealer):
    out = []
    for i, data in enumerate(draw_data):
        bid = blob_id(data, s.id_key)
        out.append((bid, blob.BLOB_TYPES[i % 3], blob.encode(data, bid, s, 3), data))
    return out


def _write_pack(kind: str, s: Sealer, blobs) -> pack.FinishedPack:
    w = pack.PackWriter(kind, s)
    for bid, btype, stored, data in blobs:
        w.add(bid, btype, stored, len(data))
    assert len(w) == len(blobs)
    return w.finish()


@prop
@given(
    datas=st.lists(st.binary(max_size=3000), min_size=1, max_size=8),
    s=sealers(),
    kind=st.sampled_from(pack.PACK_KINDS),
)
def test_pack_round_trip(datas, s, kind):
    blobs = _blob_list(datas, s)
    fp = _write_pack(kind, s, blobs)
    assert fp.id == xxhash.xxh3_128_hexdigest(fp.data) == content_id(fp.data)
    assert fp.name == f"{pack.PREFIX[kind]}{fp.id[:2]}/{fp.id}"
    assert fp.data.endswith(pack.TRAILER_MAGIC)

    entries = pack.read_header(fp.data, len(fp.data), s, "pack")
    assert entries == fp.blobs
    # Reading only the tail (header + trailer) is enough, as for a ranged GET.
    (hlen,) = struct.unpack("<I", fp.data[-pack.TRAILER_LEN : -len(pack.TRAILER_MAGIC)])
    tail = fp.data[-(hlen + pack.TRAILER_LEN) :]
    assert pack.read_header(tail, len(fp.data), s, "pack") == entries

    offset = 0
    for e, (bid, btype, stored, data) in zip(entries, blobs):
        assert (e.id, e.type, e.offset, e.length, e.raw_length) == (bid, btype, offset, len(stored), len(data))
        assert fp.data[e.offset : e.offset + e.length] == stored
        assert blob.decode(fp.data[e.offset : e.offset + e.length], e.id, s, "blob", e.raw_length) == data
        offset += e.length


def test_pack_id_checks_content():
    fp = _write_pack("data", PLAIN, _blob_list([b"a" * 100, b"b" * 100], PLAIN))
    damaged = bytearray(fp.data)
    damaged[3] ^= 1
    assert content_id(bytes(damaged)) != fp.id


@pytest.fixture
def sample_pack(sealer) -> tuple[pack.FinishedPack, Sealer]:
    return _write_pack("data", sealer, _blob_list([os.urandom(500), b"x" * 2000, b""], sealer)), sealer


def test_pack_truncated(sample_pack):
    fp, s = sample_pack
    for n in range(len(fp.data)):
        with pytest.raises(FormatError):
            pack.read_header(fp.data[:n], n, s, "pack")


def test_pack_missing_magic(sample_pack):
    fp, s = sample_pack
    with pytest.raises(FormatError, match="trailer"):
        pack.read_header(fp.data[:-8] + b"CVPACK2\0", len(fp.data), s, "pack")
    with pytest.raises(FormatError, match="trailer"):
        pack.read_header(fp.data + b"\0", len(fp.data) + 1, s, "pack")


def test_pack_tail_too_short(sample_pack):
    fp, s = sample_pack
    with pytest.raises(FormatError, match="does not fit"):
        pack.read_header(fp.data[-pack.TRAILER_LEN - 10 :], len(fp.data), s, "pack")


def test_pack_header_length_lies(sample_pack):
    fp, s = sample_pack
    for hlen in (0, 1, 2**32 - 1):
        data = fp.data[: -pack.TRAILER_LEN] + struct.pack("<I", hlen) + pack.TRAILER_MAGIC
        with pytest.raises(FormatError):
            pack.read_header(data, len(data), s, "pack")


def test_pack_smaller_than_its_header_says(sample_pack):
    fp, s = sample_pack
    with pytest.raises(FormatError, match="past the blob area"):
        pack.read_header(fp.data, len(fp.data) - 1, s, "pack")


def test_pack_header_newer_version(sealer):
    header = envelope.seal({"version": 2, "blobs": []}, "pack-header", sealer)
    data = header + struct.pack("<I", len(header)) + pack.TRAILER_MAGIC
    with pytest.raises(UnknownVersionError):
        pack.read_header(data, len(data), sealer, "pack")


def _pack_with_header(doc, s: Sealer = PLAIN) -> bytes:
    header = envelope.seal(doc, "pack-header", s)
    return b"\0" * 64 + header + struct.pack("<I", len(header)) + pack.TRAILER_MAGIC


GOOD_ENTRY = [b"\1" * 16, 0, 0, 10, 10]


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"version": 1, "blobs": [GOOD_ENTRY[:4]]}, id="short-entry"),
        pytest.param({"version": 1, "blobs": [[b"\1" * 15, 0, 0, 10, 10]]}, id="short-id"),
        pytest.param({"version": 1, "blobs": [[b"\1" * 16, 7, 0, 10, 10]]}, id="unknown-type"),
        pytest.param({"version": 1, "blobs": [[b"\1" * 16, 0, -1, 10, 10]]}, id="negative-offset"),
        pytest.param({"version": 1, "blobs": [[b"\1" * 16, 0, 0, 2**48, 10]]}, id="huge-length"),
        pytest.param({"version": 1, "blobs": [[b"\1" * 16, 0, 60, 10, 10]]}, id="past-end"),
        pytest.param({"version": 1, "blobs": [{"id": 1}]}, id="entry-map"),
        pytest.param({"blobs": []}, id="no-version"),
        pytest.param([1, 2], id="not-a-map"),
        pytest.param({"version": 1, "blobs": 7}, id="blobs-int"),
        pytest.param({"version": 1, "blobs": None}, id="blobs-none"),
    ],
)
def test_pack_hostile_header(doc):
    data = _pack_with_header(doc)
    with pytest.raises(FormatError):
        pack.read_header(data, len(data), PLAIN, "pack")


pack_header_docs = doc_like(
    {
        "blobs": st.lists(
            st.tuples(ids16, st.integers(-1, 3), st.integers(-1, 2**49), st.integers(-1, 200), st.integers(0, 200))
            .map(list)
            | st.lists(msgpack_values, max_size=6),
            max_size=4,
        )
    }
)


@hostile
@given(doc=pack_header_docs, s=sealers(), size=st.integers(0, 300))
def test_pack_read_header_hostile_doc(doc, s, size):
    data = _pack_with_header(doc, s)
    raises_only_decode_errors(pack.read_header, data, max(size, len(data)), s, "pack")


@hostile
@given(data=st.binary(max_size=200), size=st.integers(0, 1000), tail=st.sampled_from([b"", pack.TRAILER_MAGIC]))
def test_pack_read_header_arbitrary_bytes(data, size, tail):
    raises_only_decode_errors(pack.read_header, data + tail, size, PLAIN, "pack")
    raises_only_decode_errors(pack.read_header, data + tail, size, SEALED, "pack")


# -- pack indexes ----------------------------------------------------------------------------


def _records(s: Sealer) -> list[packindex.PackRecord]:
    recs = []
    for kind, datas in (("data", [os.urandom(100), b"y" * 1000]), ("tree", [b"{}", b"z" * 50, os.urandom(7)])):
        fp = _write_pack(kind, s, _blob_list(datas, s))
        recs.append(packindex.PackRecord(fp.id, kind, len(fp.data), fp.blobs))
    return recs


def test_packindex_round_trip(sealer):
    doc = packindex.IndexDoc(_records(sealer), supersedes=[content_id(b"old1"), content_id(b"old2")])
    out = packindex.decode(packindex.encode(doc, sealer), sealer, "index")
    assert out == doc
    assert all(isinstance(p.id, str) and len(p.id) == 32 for p in out.packs)


def test_packindex_empty(sealer):
    assert packindex.decode(packindex.encode(packindex.IndexDoc([]), sealer), sealer, "index") == packindex.IndexDoc([])


@prop
@given(
    packs=st.lists(
        st.tuples(
            ids16,
            st.sampled_from(pack.PACK_KINDS),
            st.lists(
                st.tuples(ids16, st.sampled_from(blob.BLOB_TYPES), st.integers(0, 1000), st.integers(0, 1000)),
                max_size=5,
            ),
        ),
        max_size=4,
    ),
    s=sealers(),
    pending=st.booleans(),
)
def test_packindex_round_trip_property(packs, s, pending):
    recs = []
    for pid, kind, entries in packs:
        blobs, offset = [], 0
        for bid, btype, length, raw in entries:
            length = min(length, raw + blob.MAX_OVERHEAD)  # a blob is never stored larger than that
            blobs.append(pack.BlobEntry(bid, btype, offset, length, raw))
            offset += length
        recs.append(packindex.PackRecord(pid.hex(), kind, offset + 20, blobs))
    doc = packindex.IndexDoc(recs, pending=pending)
    assert packindex.decode(packindex.encode(doc, s), s, "index") == doc


def test_packindex_pending_flag_must_be_bool(sealer):
    assert packindex.decode(_index_bytes({"version": 1, "features": [], "packs": []}), PLAIN, "i").pending is False
    with pytest.raises(FormatError, match="pending"):
        packindex.decode(_index_bytes({"version": 1, "features": [], "packs": [], "pending": 1}), PLAIN, "i")


def test_packindex_entry_past_pack_end(sealer):
    rec = _records(sealer)[0]
    last = rec.blobs[-1]
    short = packindex.PackRecord(rec.id, rec.kind, last.offset + last.length - 1, rec.blobs)
    with pytest.raises(FormatError, match="past the end of pack"):
        packindex.decode(packindex.encode(packindex.IndexDoc([short]), sealer), sealer, "index")


def _index_bytes(doc) -> bytes:
    return envelope.seal(doc, "index", PLAIN)


GOOD_PACK = {"id": b"\2" * 16, "kind": "data", "size": 100, "blobs": [GOOD_ENTRY]}


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"version": 1, "packs": [{**GOOD_PACK, "id": b"\2" * 15}]}, id="short-pack-id"),
        pytest.param({"version": 1, "packs": [{**GOOD_PACK, "id": "02" * 16}]}, id="hex-pack-id"),
        pytest.param({"version": 1, "packs": [{**GOOD_PACK, "kind": "cold"}]}, id="unknown-kind"),
        pytest.param({"version": 1, "packs": [{**GOOD_PACK, "size": "100"}]}, id="size-str"),
        pytest.param({"version": 1, "packs": [{**GOOD_PACK, "blobs": [[1, 2]]}]}, id="bad-entry"),
        pytest.param({"version": 1, "packs": [5]}, id="pack-not-a-map"),
        pytest.param({"version": 1, "packs": [], "supersedes": ["xyz"]}, id="bad-supersedes"),
        pytest.param({"version": 1, "packs": [], "supersedes": "ab" * 16}, id="supersedes-str"),
        pytest.param({"version": 1, "packs": 5}, id="packs-int"),
        pytest.param({"version": 1, "packs": [{**GOOD_PACK, "blobs": 3}]}, id="blobs-int"),
        pytest.param({"version": 1, "packs": [{**GOOD_PACK, "kind": ["data"]}]}, id="kind-list"),
    ],
)
def test_packindex_hostile(doc):
    with pytest.raises(FormatError):
        packindex.decode(_index_bytes(doc), PLAIN, "index")


def test_packindex_newer_version():
    with pytest.raises(UnknownVersionError, match="version 3"):
        packindex.decode(_index_bytes({"version": 3, "packs": b"", "blobs": b""}), PLAIN, "index")


packindex_docs = doc_like(
    {
        "packs": st.lists(
            doc_like(
                {
                    "id": ids16,
                    "kind": st.sampled_from(pack.PACK_KINDS),
                    "size": st.integers(0, 300),
                    "blobs": st.lists(
                        st.tuples(ids16, st.integers(0, 3), st.integers(0, 200), st.integers(0, 200), st.integers(0, 99))
                        .map(list)
                        | msgpack_values,
                        max_size=3,
                    ),
                },
                changes=1,
            ),
            max_size=3,
        ),
        "supersedes": st.lists(st.text("0123456789abcdef", min_size=32, max_size=32) | msgpack_values, max_size=2),
    }
)


@hostile
@given(data=st.data(), s=sealers())
def test_packindex_decode_arbitrary_bytes(data, s):
    out = raises_only_decode_errors(packindex.decode, data.draw(envelope_bytes("index", packindex_docs, s)), s, "index")
    if out is not None:
        for p in out.packs:
            assert all(b.offset + b.length <= p.size for b in p.blobs)


# -- tree nodes ------------------------------------------------------------------------------

good_names = st.binary(min_size=1, max_size=tree.NAME_MAX).filter(lambda n: tree.name_problem(n) is None)
ints64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
uints = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def tree_entries(draw, name=good_names):
    t = draw(st.sampled_from(sorted(tree.TYPES)))
    e = tree.Entry(
        name=draw(name),
        type=t,
        mode=draw(st.integers(0, 0o7777)),
        uid=draw(st.integers(0, 2**32 - 1)),
        gid=draw(st.integers(0, 2**32 - 1)),
        mtime=draw(ints64),
        ctime=draw(ints64),
        size=draw(st.integers(0, 2**63 - 1)),
        ino=draw(uints),
        nlink=draw(st.integers(0, 2**32)),
    )
    if t == tree.FILE:
        e.chunks = draw(st.lists(ids16, max_size=5))
    elif t == tree.DIR:
        e.tree = draw(ids16)
    elif t == tree.SYMLINK:
        e.target = draw(st.binary(max_size=300).filter(lambda b: b"\0" not in b))
    elif t in (tree.CHARDEV, tree.BLOCKDEV):
        e.rdev = draw(uints)
    return e


unique_entries = st.lists(tree_entries(), max_size=12, unique_by=lambda e: e.name)


@prop
@given(entries=unique_entries)
def test_tree_round_trip(entries):
    out = tree.decode(tree.encode(tree.TreeNode(entries)))
    assert out.rejected == []
    assert out.entries == sorted(entries, key=lambda e: e.name)


def test_tree_every_type_and_non_utf8_names():
    cid = b"\3" * 16
    entries = [
        tree.Entry(b"\xff\xfe latin-1 caf\xe9", tree.FILE, mode=0o4755, size=12, chunks=[cid, cid], mtime=-1),
        tree.Entry("snowman \u2603".encode(), tree.DIR, mode=0o1777, tree=b"\4" * 16),
        tree.Entry(b"link", tree.SYMLINK, mode=0o777, target=b"../\xff/target"),
        tree.Entry(b"fifo", tree.FIFO),
        tree.Entry(b"tty", tree.CHARDEV, rdev=(4 << 8) | 1),
        tree.Entry(b"sda", tree.BLOCKDEV, rdev=(8 << 8)),
        tree.Entry(b"x" * 255, tree.FILE),
        tree.Entry(b"...", tree.FILE),
        tree.Entry(b" ", tree.FILE),
    ]
    out = tree.decode(tree.encode(tree.TreeNode(entries)))
    assert out.rejected == []
    assert out.entries == sorted(entries, key=lambda e: e.name)
    assert {e.type for e in out.entries} == tree.TYPES


def test_tree_encoding_is_canonical():
    a = [tree.Entry(b"b", tree.FIFO), tree.Entry(b"a", tree.FIFO)]
    assert tree.encode(tree.TreeNode(a)) == tree.encode(tree.TreeNode(a[::-1]))


BAD_NAMES = [b"", b".", b"..", b"a/b", b"/", b"a\x00b", b"x" * 256]


def test_tree_name_problem():
    assert tree.name_problem("text") == "name is not bytes"
    assert tree.name_problem(None) == "name is not bytes"
    assert tree.name_problem(b"x" * 255) is None
    assert tree.name_problem(b"\xff\xfe") is None


@pytest.mark.parametrize("name", BAD_NAMES)
def test_tree_encode_refuses_bad_names(name):
    assert tree.name_problem(name)
    with pytest.raises(ValueError):
        tree.encode(tree.TreeNode([tree.Entry(b"ok", tree.FIFO), tree.Entry(name, tree.FIFO)]))


def test_tree_encode_refuses_duplicates():
    with pytest.raises(ValueError, match="duplicate"):
        tree.encode(
            tree.TreeNode(
                [tree.Entry(b"a", tree.FIFO), tree.Entry(b"b", tree.FIFO), tree.Entry(b"a", tree.DIR, tree=b"\0" * 16)]
            )
        )


def _raw_node(entries: list) -> bytes:
    return limits.pack({"version": 1, "entries": entries})


def test_tree_decode_hostile_names():
    good = [
        tree.Entry(b"zeta", tree.FIFO),
        tree.Entry(b"alpha", tree.FILE, size=3),
        tree.Entry(b"\xffmid", tree.SYMLINK, target=b"t"),
    ]
    first_dup = tree.Entry(b"dup", tree.FIFO, ino=1)
    bad = [
        tree.Entry(b"", tree.FIFO),
        tree.Entry(b".", tree.DIR, tree=b"\0" * 16),
        tree.Entry(b"..", tree.DIR, tree=b"\0" * 16),
        tree.Entry(b"a/b", tree.FIFO),
        tree.Entry(b"a\x00b", tree.FIFO),
        tree.Entry(b"n" * 256, tree.FIFO),
        tree.Entry(b"dup", tree.FIFO, ino=2),
        tree.Entry(b"alpha", tree.FIFO),
    ]
    maps = [good[0].to_map(), bad[0].to_map(), first_dup.to_map(), bad[1].to_map(), good[1].to_map()]
    maps += [b.to_map() for b in bad[2:]] + [good[2].to_map()]
    maps.append({"type": "fifo"})  # no name at all
    maps.append({"name": "text", "type": "fifo"})  # a str, not bytes
    out = tree.decode(_raw_node(maps))
    assert out.entries == sorted(good + [first_dup], key=lambda e: e.name)
    assert out.entries[[e.name for e in out.entries].index(b"dup")].ino == 1  # the first one wins
    assert len(out.rejected) == len(bad) + 2
    assert all(isinstance(r, str) and r for r in out.rejected)
    assert sum("duplicate" in r for r in out.rejected) == 2
    assert any("256" in r for r in out.rejected)
    assert any("NUL" in r for r in out.rejected)
    assert any("'/'" in r for r in out.rejected)
    assert any("not bytes" in r for r in out.rejected)


def test_tree_decode_keeps_good_entries_sorted():
    maps = [tree.Entry(n, tree.FIFO).to_map() for n in (b"c", b"a", b"\xff", b"b", b"A")]
    out = tree.decode(_raw_node(maps))
    assert [e.name for e in out.entries] == [b"A", b"a", b"b", b"c", b"\xff"]


HOSTILE_ENTRIES = [
    pytest.param([1, 2], id="not-a-map"),
    pytest.param({"name": b"x", "type": "socket"}, id="unknown-type"),
    pytest.param({"name": b"x"}, id="no-type"),
    pytest.param({"name": b"x", "type": "file", "mode": "0644"}, id="mode-str"),
    pytest.param({"name": b"x", "type": "file", "uid": True}, id="uid-bool"),
    pytest.param({"name": b"x", "type": "file", "mtime": 1.5}, id="mtime-float"),
    pytest.param({"name": b"x", "type": "file", "size": -1}, id="negative-size"),
    pytest.param({"name": b"x", "type": "file", "chunks": [b"\0" * 15]}, id="short-chunk-id"),
    pytest.param({"name": b"x", "type": "file", "chunks": b"\0" * 16}, id="chunks-bin"),
    pytest.param({"name": b"x", "type": "dir"}, id="dir-without-tree"),
    pytest.param({"name": b"x", "type": "dir", "tree": b"\0" * 17}, id="dir-long-tree"),
    pytest.param({"name": b"x", "type": "symlink"}, id="symlink-without-target"),
    pytest.param({"name": b"x", "type": "symlink", "target": b"a\0b"}, id="symlink-nul"),
    pytest.param({"name": b"x", "type": ["file"]}, id="type-list"),
    pytest.param({"name": b"x", "type": {"file": 1}}, id="type-map"),
]


@pytest.mark.parametrize("entry", HOSTILE_ENTRIES)
def test_tree_decode_hostile_entry(entry):
    with pytest.raises(FormatError):
        tree.decode(_raw_node([tree.Entry(b"ok", tree.FIFO).to_map(), entry]))


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"entries": []}, id="no-version"),
        pytest.param({"version": 1}, id="no-entries"),
        pytest.param({"version": 1, "entries": {"a": 1}}, id="entries-map"),
        pytest.param([], id="not-a-map"),
        pytest.param(b"\0" * 16, id="bin"),
    ],
)
def test_tree_decode_hostile_node(doc):
    with pytest.raises(FormatError):
        tree.decode(limits.pack(doc))


def test_tree_newer_version_and_features():
    with pytest.raises(UnknownVersionError, match="version 2"):
        tree.decode(limits.pack({"version": 2, "entries": []}))
    with pytest.raises(UnknownVersionError, match="xattrs"):
        tree.decode(limits.pack({"version": 1, "features": ["xattrs"], "entries": []}))


@prop
@given(entries=unique_entries, probes=st.lists(st.binary(max_size=8), max_size=10))
def test_tree_find(entries, probes):
    node = tree.decode(tree.encode(tree.TreeNode(entries)))
    for e in entries:
        found = node.find(e.name)
        assert found is not None and found == e
    names = {e.name for e in entries}
    for p in probes:
        if p not in names:
            assert node.find(p) is None
    assert tree.TreeNode([]).find(b"a") is None


tree_entry_maps = doc_like(
    {
        "name": good_names | st.sampled_from(BAD_NAMES + ["text", None]) | st.sampled_from([b"a", b"b"]),
        "type": st.sampled_from(sorted(tree.TYPES)),
        "mode": st.integers(0, 2**20),
        "uid": st.integers(0, 2**32),
        "mtime": ints64,
        "size": st.integers(-1, 2**40),
        "chunks": st.lists(ids16, max_size=3),
        "tree": ids16,
        "target": st.binary(max_size=10),
        "rdev": uints,
    },
    changes=1,
)
tree_docs = doc_like({"entries": st.lists(tree_entry_maps | tree_entry_maps | msgpack_values, max_size=6)})


@hostile
@given(data=st.one_of(st.binary(max_size=200), tree_docs.map(limits.pack)))
def test_tree_decode_arbitrary_bytes(data):
    node = raises_only_decode_errors(tree.decode, data)
    if node is not None:
        names = [e.name for e in node.entries]
        assert names == sorted(set(names))
        assert all(tree.name_problem(n) is None for n in names)


def _outcome(fn, data):
    """What `fn(data)` gives: ("ok", value) or ("error", its type, its message)."""
    try:
        return "ok", fn(data)
    except Exception as exc:  # noqa: BLE001 - compared, whatever it is
        return "error", type(exc), str(exc)


def _outline_of(node: tree.TreeNode) -> list:
    return [(e.name, e.type, e.chunks if e.type == tree.FILE else e.tree if e.type == tree.DIR else None)
            for e in node.entries]


@hostile
@given(data=st.one_of(st.binary(max_size=200), tree_docs.map(limits.pack)))
def test_tree_outline_checks_what_decode_checks(data):
    """A restore's check walk reads outlines and its write walk decodes: the same bytes must
    fail the same way in both (nothing written first) and name the same blobs."""
    full, light = _outcome(tree.decode, data), _outcome(tree.outline, data)
    if full[0] == "ok":
        assert light == ("ok", _outline_of(full[1]))
    else:
        assert light == full


@pytest.mark.parametrize("entry", HOSTILE_ENTRIES)
def test_tree_outline_refuses_each_hostile_entry(entry):
    data = _raw_node([tree.Entry(b"ok", tree.FIFO).to_map(), entry])
    assert _outcome(tree.outline, data) == _outcome(tree.decode, data)
    assert _outcome(tree.outline, data)[0] == "error"


def test_tree_outline_drops_what_decode_drops():
    maps = [tree.Entry(b"b", tree.FILE, chunks=[b"\1" * 16]).to_map(), tree.Entry(b"a/b", tree.FILE).to_map(),
            tree.Entry(b"a", tree.DIR, tree=b"\2" * 16).to_map(), tree.Entry(b"b", tree.FIFO).to_map(),
            tree.Entry(b"l", tree.SYMLINK, target=b"t").to_map()]
    data = _raw_node(maps)
    assert tree.outline(data) == [(b"a", tree.DIR, b"\2" * 16), (b"b", tree.FILE, [b"\1" * 16]),
                                  (b"l", tree.SYMLINK, None)]
    assert tree.outline(data) == _outline_of(tree.decode(data))


# -- snapshots -------------------------------------------------------------------------------

zfs_names = st.text(st.characters(blacklist_characters="/@#\0", blacklist_categories=("Cs",)), min_size=1,
                   max_size=12).filter(lambda n: n not in (".", ".."))
zfs_maps = st.fixed_dictionaries({
    "dataset": st.lists(zfs_names, min_size=1, max_size=3).map("/".join),
    "snapshot": zfs_names,
    "guid": st.integers(0, 2**64 - 1),
    "createtxg": st.integers(0, 2**40),
    "creation": st.integers(-2**40, 2**40),
    "base": st.none() | st.fixed_dictionaries(
        {"snapshot": zfs_names, "guid": st.integers(0, 2**64 - 1), "createtxg": st.integers(0, 2**40)}),
    "flags": st.lists(st.sampled_from(["-c", "-L", "-p", "-w"]), max_size=2),
    "length": st.integers(0, 2**50),
    "xxh3": ids16,
    "chunks": ids16,
})
snapshot_records = st.sampled_from(snapshot.KINDS).flatmap(lambda kind: st.builds(
    snapshot.SnapshotRecord,
    kind=st.just(kind),
    source=st.text(max_size=40),
    time=st.integers(0, 2**63 - 1),
    hostname=st.text(max_size=20),
    paths=st.lists(st.text(max_size=20), max_size=3),
    tree=st.none() | ids16,
    parent=st.none() | st.text("0123456789abcdef", min_size=32, max_size=32),
    summary=st.dictionaries(st.text(max_size=10), st.integers(0, 2**63) | st.floats(allow_nan=False), max_size=4),
    incomplete=st.booleans(),
    errors=st.lists(st.text(max_size=30), max_size=3),
    tags=st.lists(st.text(max_size=10), max_size=3),
    zfs=zfs_maps if kind == "zfs" else st.none(),
    program=st.text(max_size=20),
))


@prop
@given(rec=snapshot_records, s=sealers())
def test_snapshot_round_trip(rec, s):
    data = snapshot.encode(rec, s)
    out = snapshot.decode(data, s, "snapshot")
    assert out == rec
    assert out.id == ""  # the content id is the object's name, not part of it


def test_snapshot_time_helpers():
    rec = snapshot.SnapshotRecord("tree", "/home", 1_700_000_000 * 10**9 + 5, id="0123456789abcdef" * 2)
    assert rec.time_str == "2023-11-14T22:13:20Z"
    assert rec.short_id == "01234567"


def test_snapshot_sealed_is_not_plaintext():
    rec = snapshot.SnapshotRecord("tree", "/very/secret/source/path", 1, hostname="secret-host")
    data = snapshot.encode(rec, SEALED)
    assert b"secret" not in data
    with pytest.raises(FormatError):
        snapshot.decode(data, PLAIN, "snapshot")


GOOD_SNAPSHOT = {"version": 1, "kind": "tree", "source": "/src", "time": 1}


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"kind": "backup"}, id="unknown-kind"),
        pytest.param({"kind": None}, id="no-kind"),
        pytest.param({"source": b"/src"}, id="source-bin"),
        pytest.param({"time": "now"}, id="time-str"),
        pytest.param({"tree": b"\0" * 15}, id="short-tree"),
        pytest.param({"tree": "00" * 16}, id="tree-hex"),
        pytest.param({"kind": ["tree"]}, id="kind-list"),
        pytest.param({"paths": 5}, id="paths-int"),
        pytest.param({"errors": 1.5}, id="errors-float"),
        pytest.param({"tags": True}, id="tags-bool"),
    ],
)
def test_snapshot_hostile(changes):
    data = envelope.seal({**GOOD_SNAPSHOT, **changes}, "snapshot", PLAIN)
    with pytest.raises(FormatError):
        snapshot.decode(data, PLAIN, "snapshot")


GOOD_ZFS = {"dataset": "tank/photos", "snapshot": "nightly-2", "guid": 2**64 - 1, "createtxg": 9,
            "creation": 1_700_000_000, "base": {"snapshot": "nightly-1", "guid": 5, "createtxg": 3},
            "flags": ["-c"], "length": 0, "xxh3": b"\1" * 16, "chunks": b"\2" * 16}


def test_snapshot_zfs_map_valid():
    rec = snapshot.decode(envelope.seal({**GOOD_SNAPSHOT, "kind": "zfs", "zfs": GOOD_ZFS}, "snapshot", PLAIN),
                          PLAIN, "snapshot")
    assert rec.zfs == GOOD_ZFS


@pytest.mark.parametrize(
    "zfs, problem",
    [
        pytest.param(None, "not a map", id="zfs-kind-without-map"),
        pytest.param([1, 2], "not a map", id="list"),
        pytest.param({k: v for k, v in GOOD_ZFS.items() if k != "chunks"}, "chunks", id="no-chunks"),
        pytest.param({**GOOD_ZFS, "dataset": b"tank"}, "dataset", id="dataset-bin"),
        pytest.param({**GOOD_ZFS, "dataset": "tank//x"}, "dataset", id="dataset-empty-component"),
        pytest.param({**GOOD_ZFS, "dataset": "tank/.."}, "dataset", id="dataset-dotdot"),
        pytest.param({**GOOD_ZFS, "snapshot": "a/b"}, "snapshot", id="snapshot-slash"),
        pytest.param({**GOOD_ZFS, "snapshot": 7}, "snapshot", id="snapshot-int"),
        pytest.param({**GOOD_ZFS, "guid": "12"}, "guid", id="guid-str"),
        pytest.param({**GOOD_ZFS, "guid": -1}, "guid", id="guid-negative"),
        pytest.param({**GOOD_ZFS, "createtxg": True}, "createtxg", id="createtxg-bool"),
        pytest.param({**GOOD_ZFS, "creation": 1.5}, "creation", id="creation-float"),
        pytest.param({**GOOD_ZFS, "base": "nightly-1"}, "base", id="base-str"),
        pytest.param({**GOOD_ZFS, "base": {"snapshot": "a", "guid": 1}}, "base.createtxg", id="base-no-txg"),
        pytest.param({**GOOD_ZFS, "base": {"snapshot": None, "guid": 1, "createtxg": 1}}, "base.snapshot",
                     id="base-snapshot-nil"),
        pytest.param({**GOOD_ZFS, "flags": "-c"}, "flags", id="flags-str"),
        pytest.param({**GOOD_ZFS, "flags": [1]}, "flags", id="flags-int"),
        pytest.param({**GOOD_ZFS, "length": -1}, "length", id="length-negative"),
        pytest.param({**GOOD_ZFS, "xxh3": b"\1" * 15}, "xxh3", id="xxh3-short"),
        pytest.param({**GOOD_ZFS, "chunks": "00" * 16}, "chunks", id="chunks-hex"),
    ],
)
def test_snapshot_bad_zfs_map(zfs, problem):
    data = envelope.seal({**GOOD_SNAPSHOT, "kind": "zfs", "zfs": zfs}, "snapshot", PLAIN)
    with pytest.raises(FormatError, match=f"zfs map: {problem}"):
        snapshot.decode(data, PLAIN, "snapshot")


def test_snapshot_tree_with_zfs_map():
    data = envelope.seal({**GOOD_SNAPSHOT, "zfs": GOOD_ZFS}, "snapshot", PLAIN)
    with pytest.raises(FormatError, match="a tree snapshot with a zfs map"):
        snapshot.decode(data, PLAIN, "snapshot")


def test_snapshot_newer_version():
    data = envelope.seal({**GOOD_SNAPSHOT, "version": 2}, "snapshot", PLAIN)
    with pytest.raises(UnknownVersionError, match="version 2"):
        snapshot.decode(data, PLAIN, "snapshot")


snapshot_docs = doc_like(
    {
        "kind": st.sampled_from(snapshot.KINDS),
        "source": st.text(max_size=5),
        "time": st.integers(0, 2**40),
        "hostname": st.text(max_size=5),
        "paths": st.lists(st.text(max_size=5), max_size=2),
        "tree": st.none() | ids16,
        "parent": st.none() | st.text("0123456789abcdef", min_size=32, max_size=32),
        "summary": st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=2),
        "incomplete": st.booleans(),
        "errors": st.lists(st.text(max_size=5), max_size=2),
        "tags": st.lists(st.text(max_size=5), max_size=2),
        "zfs": st.none(),
        "program": st.text(max_size=5),
    }
)


@hostile
@given(data=envelope_bytes("snapshot", snapshot_docs))
def test_snapshot_decode_arbitrary_bytes(data):
    raises_only_decode_errors(snapshot.decode, data, PLAIN, "snapshot")


# -- config and settings ---------------------------------------------------------------------


def _config(keys: MasterKeys | None, settings: config.Settings | None = None, **kw) -> config.VaultConfig:
    vault_id = os.urandom(16)
    key = crypto.wrap_keys(keys, b"pw", vault_id, params=FAST_SCRYPT) if keys else None
    return config.VaultConfig(
        vault_id=vault_id,
        created=1_700_000_000 * 10**9,
        encrypted=keys is not None,
        key=key,
        settings_blob=config.seal_settings(settings or config.Settings(), keys),
        **kw,
    )


@pytest.mark.parametrize("encrypted", [False, True])
def test_config_round_trip(encrypted):
    keys = MasterKeys.generate() if encrypted else None
    custom = config.Settings(chunker_min=1024, chunker_avg=4096, chunker_max=16384, chunker_seed=7,
                             compression_level=9, data_class="DEEP_ARCHIVE", data_pack_size=1 << 20)
    cfg = _config(keys, custom)
    data = config.encode(cfg)
    assert data[:2] == envelope.MAGIC and not data[3] & blob.ENCRYPTED  # readable before unlocking
    out = config.decode(data)
    assert out == cfg
    if encrypted:
        assert config.unlock(out, b"pw") == keys
        assert config.unlock(out, b"wrong") is None
    assert config.open_settings(out, keys) == custom


def test_settings_defaults_round_trip(sealer):
    keys = sealer.keys
    s = config.Settings()
    cfg = _config(keys, s)
    assert config.open_settings(cfg, keys) == s
    assert config.Settings.from_map(s.to_map(), "settings") == s


def test_settings_tampered():
    keys = MasterKeys.generate()
    cfg = _config(keys)
    blob_ = cfg.settings_blob
    for i in range(len(blob_)):
        damaged = bytearray(blob_)
        damaged[i] ^= 0x20
        cfg.settings_blob = bytes(damaged)
        with pytest.raises(DECODE_ERRORS):
            config.open_settings(cfg, keys)


def test_settings_replaced_by_unencrypted():
    """Nobody without the password can swap in weaker settings, even in plaintext."""
    keys = MasterKeys.generate()
    cfg = _config(keys)
    cfg.settings_blob = config.seal_settings(config.Settings(chunker_min=1, chunker_avg=2, chunker_max=3), None)
    with pytest.raises(FormatError):
        config.open_settings(cfg, keys)


def test_settings_from_other_vault():
    cfg = _config(MasterKeys.generate())
    with pytest.raises(AuthenticationError):
        config.open_settings(cfg, MasterKeys.generate())


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: m.pop("chunker"), id="no-chunker"),
        pytest.param(lambda m: m["chunker"].update(algorithm="rabin"), id="unknown-chunker"),
        pytest.param(lambda m: m["compression"].update(algorithm="lz4"), id="unknown-compression"),
        pytest.param(lambda m: m["chunker"].update(max=0), id="zero-max"),
        pytest.param(lambda m: m["chunker"].update(min="1"), id="min-str"),
        pytest.param(lambda m: m["pack_size"].update(data=2**40), id="huge-pack"),
        pytest.param(lambda m: m.update(storage_classes=["STANDARD"]), id="classes-list"),
        pytest.param(lambda m: m["storage_classes"].pop("index"), id="no-index-class"),
    ],
)
def test_settings_hostile(change):
    m = config.Settings().to_map()
    change(m)
    with pytest.raises(FormatError):
        config.Settings.from_map(m, "settings")


def test_settings_newer_version():
    m = {**config.Settings().to_map(), "version": 2}
    with pytest.raises(UnknownVersionError, match="version 2"):
        config.Settings.from_map(m, "settings")


def _config_bytes(**changes) -> bytes:
    cfg = _config(None)
    doc = {
        "version": 1,
        "features": [],
        "vault_id": cfg.vault_id,
        "created": cfg.created,
        "encryption": "none",
        "key": None,
        "settings": cfg.settings_blob,
    }
    doc.update(changes)
    return envelope.seal({k: v for k, v in doc.items() if v is not ...}, "config", PLAIN, compress=False)


def test_config_newer_version():
    with pytest.raises(UnknownVersionError) as info:
        config.decode(_config_bytes(version=2))
    assert "version 2" in str(info.value)
    assert info.value.hint and "upgrade" in info.value.hint
    assert info.value.exit_code == ExitCode.UNSUPPORTED


def test_config_unknown_feature():
    with pytest.raises(UnknownVersionError, match="append-only-v2"):
        config.decode(_config_bytes(features=["append-only-v2"]))
    with pytest.raises(UnknownVersionError, match="append-only-v2"):
        config.decode(config.encode(_config(None, features=["append-only-v2"])))


def test_config_newer_envelope():
    data = bytearray(_config_bytes())
    data[2] = 2
    with pytest.raises(UnknownVersionError):
        config.decode(bytes(data))


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"encryption": "aes-gcm"}, id="unknown-encryption"),
        pytest.param({"vault_id": b"short"}, id="short-vault-id"),
        pytest.param({"vault_id": ...}, id="no-vault-id"),
        pytest.param({"settings": ...}, id="no-settings"),
        pytest.param({"settings": "text"}, id="settings-str"),
        pytest.param({"encryption": "chacha20-poly1305", "key": None}, id="encrypted-without-key"),
        pytest.param({"encryption": ["none"]}, id="encryption-list"),
        pytest.param({"features": "x"}, id="features-str"),
        pytest.param({"created": "yesterday"}, id="created-str"),
        pytest.param({"created": None}, id="created-none"),
    ],
)
def test_config_hostile(changes):
    with pytest.raises(FormatError):
        config.decode(_config_bytes(**changes))


config_docs = doc_like(
    {
        "vault_id": st.binary(min_size=16, max_size=16),
        "created": st.integers(0, 2**63),
        "encryption": st.just("none"),
        "key": st.none(),
        "settings": st.binary(max_size=20),
    }
)


@hostile
@given(data=envelope_bytes("config", config_docs))
def test_config_decode_arbitrary_bytes(data):
    raises_only_decode_errors(config.decode, data)


# -- limits: msgpack bombs -------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xdd" + struct.pack(">I", 2**31) + b"\0\0\0", id="array-2**31"),
        pytest.param(b"\xdd" + struct.pack(">I", 2**32 - 1) + b"\0", id="array-2**32-1"),
        pytest.param(b"\xdd" + struct.pack(">I", limits.MAX_ARRAY - 1) + b"\0" * 8, id="array-just-under-limit"),
        pytest.param(b"\xdf" + struct.pack(">I", 2**31) + b"\xa1k\0", id="map-2**31"),
        pytest.param(b"\xc6" + struct.pack(">I", 2**31) + b"abc", id="bin-2**31"),
        pytest.param(b"\xdb" + struct.pack(">I", 2**31) + b"abc", id="str-2**31"),
        pytest.param(b"\x91" * 100 + b"\0", id="nested-arrays-100"),
        pytest.param(b"\x81\xa1k" * 100 + b"\0", id="nested-maps-100"),
        pytest.param(b"\x91" * 100_000 + b"\0", id="nested-arrays-100000"),
        pytest.param(msgpack.packb({str(i): i for i in range(10_000)}), id="map-10000-keys"),
        pytest.param(msgpack.packb([{str(i): i for i in range(limits.MAX_MAP + 1)}]), id="inner-map-too-big"),
        pytest.param(msgpack.packb(msgpack.ExtType(1, b"abc")), id="ext-type"),
        pytest.param(b"\xd6\xff\0\0\0\0", id="timestamp"),
        pytest.param(msgpack.packb({1: 2}), id="int-key"),
        pytest.param(b"\x81\x91\x00\x00", id="array-key"),
        pytest.param(b"\xa2\xff\xfe", id="bad-utf8"),
        pytest.param(b"\x00\x00", id="extra-data"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="never-used-byte"),
    ],
)
def test_unpack_bombs(data):
    with pytest.raises(FormatError):
        limits.unpack(data, "bomb")


def test_unpack_depth_limit():
    def nested(levels):
        doc = 0
        for _ in range(levels):
            doc = [doc]
        return doc

    assert limits.unpack(limits.pack(nested(limits.MAX_DEPTH)), "ok") == nested(limits.MAX_DEPTH)
    for levels in (limits.MAX_DEPTH + 2, 100, 1000):
        with pytest.raises(FormatError, match="nested deeper"):
            limits.unpack(limits.pack(nested(levels)), "deep")


def test_unpack_map_limit_is_exact():
    assert limits.unpack(limits.pack({str(i): i for i in range(limits.MAX_MAP)}), "ok")
    with pytest.raises(FormatError):
        limits.unpack(limits.pack({str(i): i for i in range(limits.MAX_MAP + 1)}), "big")


@hostile
@given(doc=msgpack_docs)
def test_unpack_round_trip(doc):
    try:
        assert limits.unpack(limits.pack(doc), "doc") == doc
    except FormatError as exc:
        assert "nested deeper" in str(exc)


@hostile
@given(data=st.binary(max_size=300))
def test_unpack_arbitrary_bytes(data):
    raises_only_decode_errors(limits.unpack, data, "bytes")


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"version": 2}, id="v2"),
        pytest.param({"version": 1, "features": ["future"]}, id="feature"),
    ],
)
def test_check_version_refuses(doc):
    with pytest.raises(UnknownVersionError) as info:
        limits.check_version(doc, "thing", 1)
    assert "thing" in str(info.value)
    assert isinstance(info.value, ColdvaultError)


@pytest.mark.parametrize("doc", [[], {"version": "1"}, {"version": None}, {}, {"version": 1, "features": "x"}])
def test_check_version_malformed(doc):
    with pytest.raises(FormatError):
        limits.check_version(doc, "thing", 1)
