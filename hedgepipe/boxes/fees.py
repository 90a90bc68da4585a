"""The fee schedule boxes and parity trades are priced with (DESIGN §5, docs/strategy-box-arithmetic.md).

Deribit charges an option leg a fraction of the underlying per contract, capped at a fraction
of the option's own price; futures and the perpetual pay a fraction of the traded notional.
Defaults are the published schedule; ``[strategy-box.fees]`` in the config overrides them.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import numpy as np

Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class FeeSchedule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: Option fee per contract as a fraction of the underlying (0.0003 BTC per BTC contract).
    option_rate: Rate = 0.0003
    #: The option fee never exceeds this fraction of the option's price.
    option_cap: Rate = 0.125
    #: Futures and perpetual fee on the USD notional: the hedge is a taker order (Deribit's maker
    #: fee, 0, does not apply to it).
    future_taker: Rate = 0.0005

    def option_fee(self, price: float, underlying: float = 1.0) -> float:
        """Fee of one option leg per unit of underlying, in the option's price unit.

        ``underlying`` is one unit of the underlying in that price unit: 1 for inverse
        options (priced in BTC), the index in USD for linear (USDC) options.
        """
        return min(self.option_rate * underlying, self.option_cap * price)

    def option_fees(self, prices: np.ndarray, underlying: float = 1.0) -> np.ndarray:
        """:meth:`option_fee` of each price (NaN stays NaN)."""
        return np.minimum(self.option_rate * underlying, self.option_cap * prices)
