"""devctl records read as devd reads them (facts §2.2, §3.2, §3.12)."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vmgenc_tools import devctl
from vmgenc_tools.devctl import (
    KERNEL_LINE_MAX,
    VMGENC_LINE,
    DevctlError,
    EmbeddedNewline,
    EmbeddedNul,
    EmptyRecord,
    IgnoredText,
    LineTooLong,
    MissingNotifyField,
    MissingSpace,
    Record,
    UnknownKind,
    Unrepresentable,
    UnterminatedQuote,
    format_record,
    is_vmgenc_change,
    parse,
)

# ------------------------------------------------------------------ the vmgenc record

def test_exact_vmgenc_line_round_trips():
    rec = parse(VMGENC_LINE)
    assert VMGENC_LINE == r"!system=ACPI subsystem=VMGenerationCounter type=\_SB_.VGEN notify=0x00"
    assert rec.kind == "!" and rec.kind_name == "notify"
    assert rec.pairs == (("system", "ACPI"), ("subsystem", "VMGenerationCounter"),
                         ("type", "\\_SB_.VGEN"), ("notify", "0x00"))
    assert rec.type == "\\_SB_.VGEN"  # the backslash is kept
    assert format_record(rec) == VMGENC_LINE
    assert format_record(rec, newline=True) == VMGENC_LINE + "\n"
    assert parse(VMGENC_LINE + "\n") == rec
    assert parse((VMGENC_LINE + "\n").encode()) == rec
    assert devctl.vmgenc_record() == rec


def test_record_pairs_are_normalised_to_tuples():
    assert Record("!", [["system", "ACPI"]]) == parse("!system=ACPI")


def test_vmgenc_record_other_paths():
    xen = devctl.vmgenc_record("\\_SB_.PCI0.ISA_.VGID")
    assert format_record(xen) == ("!system=ACPI subsystem=VMGenerationCounter "
                                  "type=\\_SB_.PCI0.ISA_.VGID notify=0x00")
    assert is_vmgenc_change(xen)


@pytest.mark.parametrize("line", [
    VMGENC_LINE,
    "!system=acpi subsystem=vmgenerationcounter type=\\_SB_.GENC notify=0x00",
    "!system=VMGENC subsystem=anything type=GENERATION_CHANGED",
    "!system=vmgenc type=generation_changed",
    "!system=ACPI subsystem=Other subsystem=VMGenerationCounter type=x",  # later key wins
])
def test_predicate_accepts_real_record_and_alias(line):
    assert is_vmgenc_change(line)
    assert is_vmgenc_change(parse(line))


@pytest.mark.parametrize("line", [
    "!system=ACPI subsystem=ACAD type=\\_SB_.AC notify=0x01",
    "!system=ACPI subsystem=CMBAT type=\\_SB_.BAT0 notify=0x80",
    "!system=ACPI type=\\_SB_.VGEN notify=0x00",
    "!system=VMGENC subsystem=VMGenerationCounter type=OTHER",
    "!system=ACPIX subsystem=VMGenerationCounter type=x",
    "!system=ACPI subsystem=VMGenerationCounterX type=x",
    "+vmgenc0 at handle=\\_SB_.VGEN _HID=QEMUVGID _UID=0 _CID=VM_GEN_COUNTER on acpi0",
    "!subsystem=VMGenerationCounter system=ACPI extra",
    "!system=ACPI subsystem=VMGenerationCounter type=x".replace("ACPI", "AC\u0130"),
])
def test_predicate_rejects_other_records(line):
    assert is_vmgenc_change(line) is (line == "!subsystem=VMGenerationCounter system=ACPI extra")


def test_predicate_on_malformed_text_raises_devctl_error():
    with pytest.raises(UnknownKind):
        is_vmgenc_change("system=ACPI subsystem=VMGenerationCounter")


# ------------------------------------------------------------------ chop_var rules

def test_quoted_values_and_escaped_quotes():
    rec = parse('!system=ZFS a="two words" b="say \\"hi\\"" c=plain')
    assert rec.pairs == (("system", "ZFS"), ("a", "two words"), ("b", 'say "hi"'),
                         ("c", "plain"))


def test_unquoted_backslashes_kept_and_escaped_quote_unescaped():
    rec = parse('!k=a\\b v=x\\"y w=\\\\"z')
    assert rec.get("k") == "a\\b"
    assert rec.get("v") == 'x"y'      # every \" loses its backslash
    assert rec.get("w") == '\\"z'


def test_value_may_contain_equals_and_quotes_inside():
    rec = parse('!a=b=c d=e"f')
    assert rec.pairs == (("a", "b=c"), ("d", 'e"f'))


def test_empty_key_and_empty_values_accepted():
    rec = parse('!=x k= q=""')
    assert rec.pairs == (("", "x"), ("k", ""), ("q", ""))


def test_reading_stops_at_first_token_that_is_not_k_v():
    rec = parse("!system=A junk subsystem=B")
    assert rec.pairs == (("system", "A"),)
    assert rec.tail == "junk subsystem=B"
    assert rec.get("subsystem") is None
    with pytest.raises(IgnoredText) as e:
        parse("!system=A junk subsystem=B", strict=True)
    assert e.value.position == 10


def test_notify_does_not_skip_leading_space():
    rec = parse("! system=A")
    assert rec.pairs == () and rec.tail == " system=A"


def test_closing_quote_needs_no_space_after_it():
    assert parse('!a="x"b=c').pairs == (("a", "x"), ("b", "c"))


def test_unterminated_quote_leaves_it_and_the_rest_unset():
    line = '!system=A v="abc x=1'
    rec = parse(line)
    assert rec.pairs == (("system", "A"),)
    assert rec.tail == 'v="abc x=1'
    with pytest.raises(UnterminatedQuote) as e:
        parse(line, strict=True)
    assert e.value.position == line.index('"')


def test_backslash_at_end_of_quoted_value_escapes_the_closing_quote():
    rec = parse('!a="x\\" b=1')
    assert rec.pairs == ()  # \" is not a closing quote: the value is unterminated


def test_later_duplicate_key_wins():
    rec = parse("!type=one type=two")
    assert rec.pairs == (("type", "one"), ("type", "two"))
    assert rec.type == "two"


def test_attach_detach_and_bus():
    line = ('+ukbd0 at bus=0 hubaddr=1 port=1 devaddr=2 interface=0 ugen=ugen0.2 '
            'vendor=0x046d product=0xc31c sernum="" release=0x6400 mode=host on uhub0')
    rec = parse(line)
    assert rec.kind_name == "attach" and rec.device_name == "ukbd0" and rec.bus == "uhub0"
    assert rec.get("sernum") == "" and rec.get("vendor") == "0x046d"
    assert rec.variables()["device-name"] == "ukbd0"
    assert rec.variables()["bus"] == "uhub0"  # "on uhub0" is set after the bus=0 pair
    assert format_record(rec) == line.replace('sernum=""', "sernum=")  # bare when possible
    assert parse(format_record(rec)) == rec


def test_attach_at_optional_and_bus_is_rest_of_line():
    rec = parse("-da0   k=v   on  umass-sim0 extra words ")
    assert rec.device_name == "da0" and rec.pairs == (("k", "v"),)
    assert rec.bus == " umass-sim0 extra words "


def test_kernel_attach_with_empty_location_and_pnpinfo():
    rec = parse("+foo0 at  on nexus0\n")
    assert rec.pairs == () and rec.bus == "nexus0"
    assert format_record(rec) == "+foo0 at  on nexus0"


def test_text_before_on_prevents_bus():
    rec = parse("+x0 at a=1 junk on bus0")
    assert rec.bus is None and rec.tail == "junk on bus0"


def test_vmgenc_attach_record():
    rec = parse("+vmgenc0 at handle=\\_SB_.VGEN _HID=QEMUVGID _UID=0 _CID=VM_GEN_COUNTER on acpi0")
    assert rec.get("handle") == "\\_SB_.VGEN" and rec.get("_CID") == "VM_GEN_COUNTER"
    assert rec.bus == "acpi0"


def test_nomatch_discards_first_word():
    rec = parse("? at pnpinfo=x on pci0")
    assert rec.kind_name == "nomatch" and rec.device_name is None
    assert rec.pairs == (("pnpinfo", "x"),) and rec.bus == "pci0"
    other = parse("?word at a=1 on pci0")
    assert other.discarded == "word" and "device-name" not in other.variables()
    assert format_record(other) == "?word at a=1 on pci0"


def test_devd_variables_order_and_none():
    assert devctl.devd_variables("+x") is None
    assert devctl.devd_variables("?x") is None
    assert devctl.devd_variables("#x") == []
    assert devctl.devd_variables("-d0 at device-name=other on b") == [
        ("device-name", "d0"), ("device-name", "other"), ("bus", "b")]


# ------------------------------------------------------------------ malformed input

@pytest.mark.parametrize("line, exc, position", [
    ("", EmptyRecord, 0),
    ("\n\n", EmptyRecord, 0),
    ("system=ACPI", UnknownKind, 0),
    ("#comment", UnknownKind, 0),
    ("+ums0", MissingSpace, 5),
    ("+", MissingSpace, 1),
    ("?x", MissingSpace, 2),
    ("!a=b\0c=d", EmbeddedNul, 4),
    ("!a=b\nc=d", EmbeddedNewline, 4),
    ("!system=A subsystem=B", None, None),
])
def test_malformed_records_raise_with_position(line, exc, position):
    if exc is None:
        parse(line)
        with pytest.raises(MissingNotifyField) as e:
            parse(line, strict=True)
        assert e.value.position == 1
        return
    with pytest.raises(exc) as e:
        parse(line)
    assert e.value.position == position
    assert isinstance(e.value, DevctlError) and isinstance(e.value, ValueError)


def test_kernel_line_limit():
    assert KERNEL_LINE_MAX == 1015 and devctl.kernel_line_max(4) == 1019
    head = "!system=X subsystem=Y type=Z data="
    fits = head + "a" * (KERNEL_LINE_MAX - 1 - len(head))  # + newline = 1015 bytes
    assert parse(fits).get("data").startswith("a")
    assert len(format_record(parse(fits), newline=True).encode()) == KERNEL_LINE_MAX
    with pytest.raises(LineTooLong, match="kernel drops it") as e:
        parse(fits + "a")
    assert e.value.position == KERNEL_LINE_MAX - 1
    assert parse(fits + "a", kernel_limit=None).get("data").endswith("a")
    with pytest.raises(LineTooLong):
        format_record(parse(fits + "a", kernel_limit=None))


def test_kernel_limit_counts_bytes_not_characters():
    head = "!system=X data="
    text = head + "é" * ((KERNEL_LINE_MAX - 1 - len(head)) // 2)
    parse(text)
    with pytest.raises(LineTooLong):
        parse(text + "é")
    straddling = head + "a" * (KERNEL_LINE_MAX - 2 - len(head)) + "é"  # 1 byte left for 2
    with pytest.raises(LineTooLong) as e:
        parse(straddling)
    assert e.value.position == straddling.index("é")


@pytest.mark.parametrize("record", [
    Record("!", (("k", "a b\\"),)),
    Record("+", (), device_name="a b", bus="x"),
    Record("?", (), discarded="a b", bus="x"),
    Record("!", (("k", "a\nb"),)),
    Record("-", (), device_name="d", bus="b", tail="t"),
    Record("!", (("k", "v"),), tail=" lead"),
])
def test_unrepresentable_records(record):
    with pytest.raises(Unrepresentable):
        format_record(record)


@pytest.mark.parametrize("kwargs", [
    {"kind": "x"}, {"kind": "+"}, {"kind": "!", "device_name": "d"},
    {"kind": "!", "bus": "b"}, {"kind": "!", "pairs": (("a b", "v"),)},
    {"kind": "+", "device_name": "d", "discarded": "w"},
])
def test_invalid_record_fields(kwargs):
    with pytest.raises(DevctlError):
        Record(**kwargs)


def test_text_that_is_no_bytes_is_rejected():
    with pytest.raises(devctl.NotBytes) as e:
        parse("!a=\ud800")
    assert e.value.position == 3
    with pytest.raises(devctl.NotBytes):
        format_record(Record("!", (("a", "\ud800"),)))


def test_wrong_input_type_is_a_type_error():
    with pytest.raises(TypeError):
        parse(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------ properties

def _chars(excluded: str) -> st.SearchStrategy[str]:
    """Any character but ``excluded`` and lone surrogates (text that is no bytes)."""
    return st.characters(blacklist_categories=("Cs",), blacklist_characters=excluded)


KEYS = st.text(string.ascii_letters + string.digits + "_-", max_size=8)
VALUE_CHARS = st.one_of(st.sampled_from(list(' \t"\\=x\v\r\f\'$;`')),
                        _chars("\0\n"))
VALUES = st.text(VALUE_CHARS, max_size=12).map(
    lambda v: v + "x" if v.endswith("\\") and any(c in " \t\v\f\r" for c in v) else v)
WORDS = st.text(_chars("\0\n ="), max_size=10)
TAILS = st.one_of(st.just(""), st.text(_chars("\0\n\t\v\f\r ="),
                                       min_size=1, max_size=10))
PAIRS = st.lists(st.tuples(KEYS, VALUES), max_size=6).map(tuple)


@st.composite
def records(draw) -> Record:
    kind = draw(st.sampled_from("!+-?"))
    pairs = draw(PAIRS)
    if kind == "!":
        return Record("!", pairs, tail=draw(TAILS))
    bus = draw(st.one_of(st.none(), st.text(_chars("\0\n"),
                                            max_size=12)))
    tail = draw(TAILS) if bus is None else ""
    if kind == "?":
        return Record("?", pairs, bus=bus, discarded=draw(WORDS), tail=tail)
    return Record(kind, pairs, device_name=draw(WORDS), bus=bus, tail=tail)


@settings(max_examples=300)
@given(records())
def test_format_then_parse_is_identity(record):
    try:
        line = format_record(record)
    except Unrepresentable:
        assume(False)
    assert parse(line) == record
    assert parse(line + "\n") == record
    assert parse(line.encode("utf-8", "surrogateescape")) == record


@given(st.builds(devctl.notify_record, VALUES.filter(lambda v: v == v.strip() and v),
                 VALUES.filter(lambda v: v == v.strip() and v), VALUES, PAIRS))
def test_kernel_notify_records_round_trip(record):
    line = format_record(record)
    assert parse(line, strict="" not in (record.system, record.subsystem)) == record


@settings(max_examples=300)
@given(st.one_of(st.text(), st.binary(), st.text(st.sampled_from('!+-? ="\\ab=on at\t\n'))))
def test_parser_raises_only_its_own_errors(data):
    for strict in (False, True):
        try:
            record = parse(data, strict=strict)
        except DevctlError:
            continue
        # whatever devd read, writing it back must give a line devd reads the same way
        try:
            line = format_record(record)
        except (Unrepresentable, LineTooLong):
            continue
        assert parse(line) == record


@given(st.text(st.sampled_from('!+-? ="\\ab=on at\tx'), max_size=40))
def test_record_variables_agree_with_devd_reading(data):
    try:
        record = parse(data)
    except DevctlError:
        return
    assert record.variables() == dict(devctl.devd_variables(data.rstrip("\n")))
