"""Pricing: cards' prices per million tokens, the cached-token discount, and exact rounding."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from levant.access.pricing import FREE, Price, cost_micros, price_of, worst_case_micros

CARD = {
    "input_per_million": 0.1,
    "output_per_million": 0.3,
    "currency": "EUR",
    "cached_input_factor": 0.1,
}


def test_a_card_price_is_read_exactly() -> None:
    price = Price.from_mapping(CARD)
    # 0.1 means one tenth, not the binary float nearest to it.
    assert price == Price(100_000, 300_000, Fraction(1, 10), "EUR")
    assert Price.from_mapping({"input_per_million": "2", "output_per_million": 6}) == Price(
        2_000_000, 6_000_000
    )


def test_a_card_without_pricing_is_free() -> None:
    assert price_of(None) is FREE
    assert cost_micros(FREE, 10**6, 10**6, 10**5) == 0
    assert price_of(CARD) == Price.from_mapping(CARD)


def test_cost_of_input_output_and_cached_tokens() -> None:
    price = Price.from_mapping(CARD)
    assert cost_micros(price, 1_000_000, 0, 0) == 100_000  # 0.10 EUR
    assert cost_micros(price, 0, 1_000_000, 0) == 300_000
    # 200 uncached input + 800 cached at 10 % + 200 output, per million:
    # (200 * 100000 + 800 * 10000 + 200 * 300000) / 10**6 = 20 + 8 + 60
    assert cost_micros(price, 1000, 200, 800) == 88
    assert cost_micros(price, 1_000_000, 0, 1_000_000) == 10_000  # all cached: 90 % off


def test_rounding_is_to_the_nearest_micro_halves_up() -> None:
    half = Price(500_000, 0)  # half a micro-euro per token
    assert [cost_micros(half, n, 0, 0) for n in range(5)] == [0, 1, 1, 2, 2]
    four_tenths = Price(400_000, 0)
    assert cost_micros(four_tenths, 1, 0, 0) == 0
    assert cost_micros(four_tenths, 2, 0, 0) == 1  # 0.8
    # Rounded once per request, not per kind of token: 0.5 + 0.5 is 1, not 2.
    assert cost_micros(Price(500_000, 500_000), 1, 1, 0) == 1


def test_worst_case_assumes_no_cache_and_every_token() -> None:
    price = Price.from_mapping(CARD)
    assert worst_case_micros(price, 1000, 1000) == cost_micros(price, 1000, 1000, 0) == 400


@pytest.mark.parametrize(
    ("pricing", "match"),
    [
        ({"input_per_million": 1}, "output_per_million"),
        ({**CARD, "output_per_milion": 1}, "unknown"),
        ({**CARD, "input_per_million": 0.0000001}, "finer than one micro-unit"),
        ({**CARD, "input_per_million": -1}, "negative"),
        ({**CARD, "cached_input_factor": 1.5}, "between 0 and 1"),
        ({**CARD, "currency": "euro"}, "ISO 4217"),
        ({**CARD, "input_per_million": True}, "not a number"),
        ({**CARD, "input_per_million": "cheap"}, "not a number"),
    ],
)
def test_bad_pricing_is_refused(pricing: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Price.from_mapping(pricing)


def test_bad_token_counts_are_refused() -> None:
    price = Price.from_mapping(CARD)
    with pytest.raises(ValueError, match="cannot exceed"):
        cost_micros(price, 10, 0, 11)
    with pytest.raises(ValueError, match="negative"):
        cost_micros(price, -1, 0, 0)


prices = st.builds(
    Price,
    st.integers(0, 100_000_000),
    st.integers(0, 100_000_000),
    st.fractions(0, 1, max_denominator=1000),
)
tokens = st.integers(0, 10_000_000)


@given(prices, tokens, tokens, st.data())
def test_cost_is_the_exact_price_rounded_half_up(
    price: Price, prompt: int, completion: int, data: st.DataObject
) -> None:
    cached = data.draw(st.integers(0, prompt))
    exact = (
        Decimal(prompt - cached) * price.input_per_million_micros
        + Decimal(cached)
        * price.input_per_million_micros
        * Decimal(price.cached_input_factor.numerator)
        / price.cached_input_factor.denominator
        + Decimal(completion) * price.output_per_million_micros
    ) / 10**6
    cost = cost_micros(price, prompt, completion, cached)
    # Decimal is not exact for every fraction; the integer answer must be within rounding.
    assert abs(cost - exact) <= Decimal("0.5000001")
    if (exact * 2) % 1 != 0:  # away from a tie, it is the nearest integer
        assert cost == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@given(prices, tokens, tokens, tokens, tokens)
def test_cost_grows_with_tokens_and_splits_within_a_micro(
    price: Price, p1: int, c1: int, p2: int, c2: int
) -> None:
    whole = cost_micros(price, p1 + p2, c1 + c2, 0)
    assert cost_micros(price, p1, c1, 0) <= whole
    assert abs(cost_micros(price, p1, c1, 0) + cost_micros(price, p2, c2, 0) - whole) <= 1
