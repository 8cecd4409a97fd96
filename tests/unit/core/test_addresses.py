"""Address conversions: C-speed, and exactly as strict as `ipaddress`."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.ipam.addresses import InvalidSubnet, int_to_ip, ip_to_int, parse_address

EDGES = ["1.2.3.4", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3.04", "1.2.3.00",
         "1.2.3", "1.2.3.4.5", " 1.2.3.4", "1.2.3.4 ", "1.2.3.4\n", "256.1.1.1", "1..2.3",
         "", "a.b.c.d", "0x1.2.3.4", "1.2.3.-4", "+1.2.3.4", "1.2.3.4/32", "\uff11.2.3.4",
         "1.2.3.4\x00", "::1"]


def _reference(text: str) -> int | None:
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def _ours(text: str) -> int | None:
    try:
        return ip_to_int(text)
    except ValueError:
        return None


@pytest.mark.parametrize("text", EDGES)
def test_the_same_strings_parse_as_with_ipaddress(text: str) -> None:
    assert _ours(text) == _reference(text)


@given(st.text(alphabet="0123456789.x -", max_size=18))
def test_any_dotted_text_parses_as_with_ipaddress(text: str) -> None:
    assert _ours(text) == _reference(text)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_ints_print_as_with_ipaddress(value: int) -> None:
    assert int_to_ip(value) == str(ipaddress.IPv4Address(value))
    assert ip_to_int(int_to_ip(value)) == value


@pytest.mark.parametrize("value", [-1, 2**32])
def test_an_int_outside_ipv4_is_a_value_error(value: int) -> None:
    with pytest.raises(ValueError, match="not an IPv4 address"):
        int_to_ip(value)


def test_bad_input_is_named_by_its_field() -> None:
    with pytest.raises(InvalidSubnet) as caught:
        parse_address("10.0.0.256", field="requested_ip")
    assert caught.value.field == "requested_ip"
