"""Money: US dollars as :class:`~decimal.Decimal`, rounded to the ledger's scale.

Costs arrive as floats (LiteLLM's ``usage.cost`` or its cost header, the
catalog's per-token prices); they are converted once, by their shortest
decimal form (``repr``), so 6e-05 is stored and read back as 0.00006, not as
the binary float's 5.99999...e-05. The proto keeps ``double``; the API
converts at its edge.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from server.store.models import MONEY_SCALE

_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
ZERO = Decimal(0).quantize(_QUANTUM)


def money(value: float | int | str | Decimal | None) -> Decimal:
    """``value`` in US dollars as a Decimal with the ledger's ten decimal places (None: 0)."""
    if value is None:
        return ZERO
    if isinstance(value, float):
        value = repr(value)
    return Decimal(value).quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)
