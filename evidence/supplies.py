"""Drug supply lines of a refill, in units of the HCPCS code's dose.

docs/coding-rules.md §6 and §7.13: one line per named drug when there is a refill
(§7.8: a REFILL with `added_ul` > 0). The amount injected is the total added
volume times the drug's concentration as programmed at the end of the session
(the new solution): µL x µg/mL / 1000 = µg; `amount_ug` prints it rounded to the
nearest µg (halves up). `units` = the exact amount / the code's unit dose, rounded
up, so the units never fall short of the drug injected (18.29 mL of 25 µg/mL is
457.25 µg: 458 units of a per-1-µg code). Names match the code
table trimmed and case-insensitively, aliases included; an unmatched drug still
gets a line, with `hcpcs` and `units` null (the coder picks J3490/J7799 and adds
the NDC). A drug whose end-state concentration is unknown gets null amount and
units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from evidence.codes import is_refill
from evidence.refill import round_half_up
from evidence.rules import Rules
from parsers.model import RefillEvent, Session

_UL_PER_ML = 1000


@dataclass(frozen=True, slots=True)
class SupplyLine:
    drug: str
    hcpcs: str | None
    units: int | None
    amount_ug: int | None
    unit_dose_ug: int | None
    # drug1 or drug2: which programmed drug this line bills.
    slot: int


def _ceil_units(amount_ug: Fraction, unit_dose_ug: int) -> int:
    """Whole units of `unit_dose_ug` covering the exact amount (rounded up)."""
    return math.ceil(amount_ug / unit_dose_ug)


def supply_lines(session: Session, rules: Rules) -> tuple[SupplyLine, ...]:
    """§7.13: one line per named drug in the end state, when there is a refill."""
    if not is_refill(session):
        return ()
    added_ul = sum(e.added_ul for e in session.events if isinstance(e, RefillEvent))
    state = session.end_state
    lines: list[SupplyLine] = []
    for slot in (1, 2):
        name = state.get(f"drug{slot}_name")
        if not isinstance(name, str) or not name.strip():
            continue
        concentration = state.get(f"drug{slot}_concentration")
        exact: Fraction | None = None
        if isinstance(concentration, int) and not isinstance(concentration, bool):
            exact = Fraction(added_ul * concentration, _UL_PER_ML)
        amount = None if exact is None else round_half_up(exact)
        code = rules.drug_for(name)
        # Units come from the exact amount, never the rounded one: 457.25 µg of a
        # per-1-µg code is 458 units, not 457 (§7.13).
        units = None if code is None or exact is None else _ceil_units(exact, code.unit_dose_ug)
        lines.append(
            SupplyLine(
                drug=name.strip(),
                hcpcs=None if code is None else code.hcpcs,
                units=units,
                amount_ug=amount,
                unit_dose_ug=None if code is None else code.unit_dose_ug,
                slot=slot,
            )
        )
    return tuple(lines)
