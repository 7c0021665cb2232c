"""Prices: USD per million tokens per model, and a tenant's own prices where it has them.

`models[].input_price_per_mtok` / `output_price_per_mtok` are the list prices; a tenant
may carry `prices: {<model>: {input_price_per_mtok, output_price_per_mtok}}` (negotiated
rates, internal chargeback) which then price its calls of that model everywhere: usage
records, budgets, reports, Langfuse cost. USD per million tokens is exactly micro-USD
per token, so a cost in micro-USD is `tokens * price`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec

if TYPE_CHECKING:
    from gateway.call import Call

__all__ = ["ModelPrice", "price_of"]


class ModelPrice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    input_price_per_mtok: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """USD per million prompt tokens."""
    output_price_per_mtok: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """USD per million completion tokens."""


def price_of(call: Call) -> tuple[float, float]:
    """(input, output) USD per million tokens for this call's tenant and model."""
    model = call.route.model
    own = call.caller.tenant.prices
    if own:
        price = own.get(model.name)
        if price is not None:
            return price.input_price_per_mtok, price.output_price_per_mtok
    return model.input_price_per_mtok, model.output_price_per_mtok
