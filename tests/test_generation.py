"""Generation: raw bytes ⇄ the hypervisor's text, as QEMU writes the GUID into guest memory."""

from __future__ import annotations

import copy
import pickle
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmgenc_tools.generation import Generation, GenerationError

QEMU_TEXT = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
QEMU_RAW = bytes.fromhex("af6e4e32d1d1f64bbf41b9bb6c91fb87")


def test_qemu_example_text_to_raw():
    g = Generation.from_text(QEMU_TEXT)
    assert g.raw == QEMU_RAW
    assert g.hex == "0xaf6e4e32d1d1f64bbf41b9bb6c91fb87"


def test_qemu_example_raw_to_text():
    assert Generation(QEMU_RAW).text == QEMU_TEXT


def test_text_matches_uuid_bytes_le():
    assert Generation(QEMU_RAW).text == str(uuid.UUID(bytes_le=QEMU_RAW))


def test_parse_accepts_text_hex_and_braces_and_case():
    for s in (QEMU_TEXT, QEMU_TEXT.upper(), "{" + QEMU_TEXT + "}",
              "0xaf6e4e32d1d1f64bbf41b9bb6c91fb87", "AF6E4E32D1D1F64BBF41B9BB6C91FB87"):
        assert Generation.parse(s).raw == QEMU_RAW


@pytest.mark.parametrize("bad", [b"", b"\0" * 15, b"\0" * 17, "x" * 16])
def test_rejects_wrong_size_or_type(bad):
    with pytest.raises(GenerationError, match="16 bytes"):
        Generation(bad)


@pytest.mark.parametrize("bad", ["", "324e6eaf", "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb8g",
                                 "324e6eafd1d14bf6bf41b9bb6c91fb87x", "0x1234",
                                 "{" + QEMU_TEXT, QEMU_TEXT + "}", "{{" + QEMU_TEXT + "}}"])
def test_rejects_bad_text(bad):
    with pytest.raises(GenerationError):
        Generation.parse(bad)


def test_zero_is_no_id():
    z = Generation(b"\0" * 16)
    assert z.is_zero and str(z) == "(no ID)"
    assert not Generation(QEMU_RAW).is_zero


def test_immutable_hashable_comparable():
    a, b = Generation(QEMU_RAW), Generation.from_text(QEMU_TEXT)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.foo = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del a._raw
    assert a.raw == QEMU_RAW
    c = Generation(b"\xff" * 16)
    assert a < c and a <= c and c > a and c >= a and a <= b and a >= b
    assert not (a > c or a >= c or c < a or c <= a)
    assert sorted([c, a]) == [a, c] and max(a, c) == c
    assert a != QEMU_RAW
    with pytest.raises(TypeError):
        assert a <= QEMU_RAW  # type: ignore[operator]


def test_copies_and_pickles_keep_the_raw_bytes():
    a = Generation(QEMU_RAW)
    for again in (copy.copy(a), copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert again == a and again.raw == QEMU_RAW and hash(again) == hash(a)


@given(st.binary(min_size=16, max_size=16))
def test_roundtrip_raw_text_hex(raw):
    g = Generation(raw)
    assert Generation.from_text(g.text) == g
    assert Generation.from_hex(g.hex) == g
    assert g.text == str(uuid.UUID(bytes_le=raw))


@given(st.text(max_size=60))
def test_parse_never_raises_other_errors(s):
    try:
        g = Generation.parse(s)
    except GenerationError:
        return
    assert g.text == str(uuid.UUID(bytes_le=g.raw))


@given(st.binary(max_size=40))
def test_constructor_accepts_exactly_16_bytes_and_raises_only_its_error(raw):
    try:
        g = Generation(raw)
    except GenerationError:
        assert len(raw) != 16
        return
    assert len(raw) == 16 and g.raw == raw
