"""Page tokens are opaque, round-trip, and reject forgeries with INVALID_ARGUMENT."""

from __future__ import annotations

import pytest

from cortex_core import errors
from cortex_core.domain.paging import MAX_PAGE_SIZE, PageRequest, decode_token, encode_token


def test_a_token_round_trips_its_key() -> None:
    assert decode_token(encode_token(("2026-01-01T00:00:00+00:00", "w1"))) == (
        "2026-01-01T00:00:00+00:00",
        "w1",
    )


@pytest.mark.parametrize("token", ["%%%", "bm90IGpzb24", "eyJhIjoxfQ"])
def test_a_forged_token_is_invalid_argument_on_page_token(token: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        PageRequest.parse(10, token)
    assert caught.value.violations[0].field == "page_token"


def test_page_size_zero_means_the_default_and_large_sizes_are_capped() -> None:
    assert PageRequest.parse(0, "").size == 50
    assert PageRequest.parse(10**9, "").size == MAX_PAGE_SIZE


def test_a_negative_page_size_is_invalid_argument() -> None:
    with pytest.raises(errors.InvalidArgument):
        PageRequest.parse(-1, "")
