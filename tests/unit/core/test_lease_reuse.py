"""`app.dhcp.reuse`: which renewals the lease's last write already covers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.dhcp.reuse import check_threshold, granted

NOW = 1_000_000.0


def test_a_lease_written_less_than_the_threshold_ago_is_granted_the_time_left():
    # 600 s leases, written 100 s ago: 500 s left, and 100 < 0.25 × 600.
    assert granted(NOW + 500, 600, 0.25, NOW) == 500
    assert granted(NOW + 500.9, 600, 0.25, NOW) == 500  # rounded down, never past it


def test_an_older_lease_is_written_again():
    assert granted(NOW + 450, 600, 0.25, NOW) is None  # written 150 s ago: 0.25 × 600
    assert granted(NOW + 10, 600, 0.25, NOW) is None


def test_reuse_off_unknown_expiry_and_a_lease_stored_longer_than_the_subnet_grants():
    assert granted(NOW + 599, 600, 0.0, NOW) is None
    assert granted(None, 600, 0.25, NOW) is None
    assert granted(NOW + 3000, 600, 0.25, NOW) is None  # the lease time was shortened since


def test_less_than_a_second_left_is_written():
    assert granted(NOW + 0.5, 1, 0.9, NOW) is None
    assert granted(NOW - 5, 600, 0.25, NOW) is None  # expired


@given(left=st.floats(-1e6, 1e6, allow_nan=False), lease_time=st.integers(1, 10**7),
       threshold=st.floats(0, 0.99))
def test_the_grant_never_reaches_past_the_stored_expiry_nor_the_subnets_lease_time(
        left, lease_time, threshold):
    seconds = granted(NOW + left, lease_time, threshold, NOW)
    if seconds is not None:
        assert 1 <= seconds <= left and seconds <= lease_time
        assert lease_time - left < threshold * lease_time


@pytest.mark.parametrize("threshold", [-0.1, 1.0, 2.5])
def test_a_threshold_outside_0_to_1_is_refused(threshold):
    with pytest.raises(ValueError, match="below 1"):
        check_threshold(threshold)
    assert check_threshold(0.0) == 0.0 and check_threshold(0.5) == 0.5
