"""Prices per million tokens, read from a catalogue card, and what one request costs.

Money is integer micro-units of the billing currency (micro-euros), as in
``usage_events.price_micros``; arithmetic is exact (integers and fractions) and
rounds once per request, to the nearest micro-unit, halves up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

MICROS = 1_000_000
TOKENS_PER_PRICE = 1_000_000
_FIELDS = frozenset({"input_per_million", "output_per_million", "cached_input_factor", "currency"})


@dataclass(frozen=True, slots=True)
class Price:
    """Micro-units per million input and output tokens.

    ``cached_input_factor`` is what a cached prompt token costs relative to an
    uncached one: ``Fraction(1, 10)`` bills cached tokens at 10 % (a 90 % discount).
    """

    input_per_million_micros: int
    output_per_million_micros: int
    cached_input_factor: Fraction = Fraction(1)
    currency: str = "EUR"

    def __post_init__(self) -> None:
        if self.input_per_million_micros < 0 or self.output_per_million_micros < 0:
            raise ValueError("prices must not be negative")
        if not 0 <= self.cached_input_factor <= 1:
            raise ValueError("cached_input_factor must be between 0 and 1")
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise ValueError(f"currency must be an ISO 4217 code, got {self.currency!r}")

    @classmethod
    def from_mapping(cls, pricing: Mapping[str, object]) -> Price:
        """From a card's ``pricing``: ``{input_per_million: 0.1, output_per_million: 0.3,
        currency: EUR, cached_input_factor: 0.1}``, amounts in currency units per million tokens.
        """
        unknown = set(pricing) - _FIELDS
        if unknown:
            raise ValueError(f"unknown pricing fields: {sorted(unknown)}")
        return cls(
            input_per_million_micros=_micros(pricing, "input_per_million"),
            output_per_million_micros=_micros(pricing, "output_per_million"),
            cached_input_factor=Fraction(_decimal(pricing.get("cached_input_factor", 1))),
            currency=str(pricing.get("currency", "EUR")),
        )


FREE = Price(0, 0)
"""The price of a model whose card names none."""


def price_of(pricing: Mapping[str, object] | None) -> Price:
    """A card's price; a card without ``pricing`` is free."""
    return FREE if pricing is None else Price.from_mapping(pricing)


def cost_micros(
    price: Price, prompt_tokens: int, completion_tokens: int, cached_tokens: int
) -> int:
    """What a request cost. ``cached_tokens`` are the part of ``prompt_tokens`` served from cache.

    Rounded once, to the nearest micro-unit with halves up, so a request is off
    by at most half a micro-unit and never by more.
    """
    if min(prompt_tokens, completion_tokens, cached_tokens) < 0:
        raise ValueError("token counts must not be negative")
    if cached_tokens > prompt_tokens:
        raise ValueError("cached_tokens are part of prompt_tokens and cannot exceed them")
    exact = (
        (prompt_tokens - cached_tokens) * price.input_per_million_micros
        + cached_tokens * price.input_per_million_micros * price.cached_input_factor
        + completion_tokens * price.output_per_million_micros
    ) / Fraction(TOKENS_PER_PRICE)
    return int(exact + Fraction(1, 2)) if exact >= 0 else 0


def worst_case_micros(price: Price, prompt_tokens: int, max_tokens: int) -> int:
    """The most a request can cost before it runs: no cache hits, every allowed token produced."""
    return cost_micros(price, prompt_tokens, max_tokens, 0)


def _decimal(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"not a number: {value!r}")
    try:
        # Through str so a YAML float like 0.1 means one tenth, not its binary neighbour.
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None


def _micros(pricing: Mapping[str, object], name: str) -> int:
    if name not in pricing:
        raise ValueError(f"pricing needs {name}")
    micros = _decimal(pricing[name]) * MICROS
    if micros != micros.to_integral_value():
        raise ValueError(f"{name} is finer than one micro-unit per million tokens: {pricing[name]}")
    return int(micros)
