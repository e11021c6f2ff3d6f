"""Money: integer micro-cents (1e-6 US cent) in the store, cents at the API, dollars on screens.

A CPU generation costs a few thousandths of a cent, so whole cents cannot hold a price; floats summed over
thousands of charges and refunds drift (a balance read 4999.982268000002). Integers add exactly, and one
micro-cent is finer than any price the perf model quotes (it rounds to 1e-6 cent).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

MICROCENTS_PER_CENT = 1_000_000
# dollars are shown to the micro-cent: 1e-6 cent = 1e-8 dollar
USD_DECIMALS = 8


class MoneyError(ValueError):
    pass


def microcents(cents: float | int | str | Decimal, field: str = "credits") -> int:
    """An amount in cents (as the API and the CLI take it) as whole micro-cents, rounded half to even."""
    try:
        value = Decimal(str(cents))
    except ArithmeticError as err:
        raise MoneyError(f"{field} must be a number of cents, got {cents!r}") from err
    if not value.is_finite():
        raise MoneyError(f"{field} must be a finite number of cents, got {cents!r}")
    return int((value * MICROCENTS_PER_CENT).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def cents(amount_microcents: int) -> float:
    """Micro-cents as the float cents the API fields carry (`price_cents`, `credit_balance`): the nearest float
    to the exact decimal, so JSON shows 4999.982268, never 4999.982268000002."""
    return amount_microcents / MICROCENTS_PER_CENT


def usd(amount_microcents: int) -> str:
    """The one way money is shown (CLI; the studio's `dollars` does the same): US dollars, two decimals, more
    only where the amount has them (to the micro-cent): $50.00, $0.00002336, $49.99997664."""
    dollars = Decimal(amount_microcents) / (MICROCENTS_PER_CENT * 100)
    text = f"{abs(dollars):,.{USD_DECIMALS}f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"{'-' if dollars < 0 else ''}${whole}.{fraction.ljust(2, '0')}"
