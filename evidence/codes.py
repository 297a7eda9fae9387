"""The CPT procedure code of a session under every reprogramming profile.

docs/coding-rules.md §2 (decision table), §3 (profiles), §7.8 (refill, QHP roles):

- reprogrammed: at least one in-session change (never a reverted one, never a
  between-sessions one) whose category the profile counts; `device` settings
  never count; a concentration change counts under every profile.
- refill: at least one REFILL record with `added_ul` > 0.
- physician/QHP: the session operator's role is one of the configured QHP roles
  (the operator performed everything in the session).

The code is one of 62367-62370, 95990, 95991; never 96522 (systemic pumps). Each
result carries one sentence saying why, so the coder sees the counterfactual of
every profile side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, get_args

from evidence.diff import CONCENTRATION_DOSE, IN_SESSION, REVERTED_IN_SESSION, Change
from evidence.rules import Profile, Rules
from parsers.model import RefillEvent, Session

# Every CPT code a session may get (§2), in code order: the one enumeration the
# web list's filter and the JSON API's `procedure` parameter offer.
ProcedureCode = Literal["62367", "62368", "62369", "62370", "95990", "95991"]
PROCEDURE_CODES: Final[tuple[ProcedureCode, ...]] = get_args(ProcedureCode)

# §2 decision table: (refill, reprogrammed, physician/QHP) -> CPT code.
DECISION_TABLE: Final[Mapping[tuple[bool, bool, bool], ProcedureCode]] = MappingProxyType(
    {
        (False, False, False): "62367",
        (False, False, True): "62367",
        (False, True, False): "62368",
        (False, True, True): "62368",
        (True, True, False): "62369",
        (True, True, True): "62370",
        (True, False, False): "95990",
        (True, False, True): "95991",
    }
)

_ROLE_PHRASES: Final = MappingProxyType(
    {
        "physician": "a physician",
        "qhp": "a QHP",
        "nurse": "a nurse",
        "technician": "a technician",
        "unknown": "an operator of unknown role",
    }
)


@dataclass(frozen=True, slots=True)
class CodeResult:
    """The code of one session under one profile, and why."""

    profile: str
    procedure: str
    reprogrammed: bool
    refill: bool
    physician_or_qhp: bool
    # The in-session changes this profile counts, in `changes` order.
    counted: tuple[str, ...]
    counterfactual: str


def procedure_code(*, refill: bool, reprogrammed: bool, physician_or_qhp: bool) -> str:
    """The §2 decision table."""
    return DECISION_TABLE[(refill, reprogrammed, physician_or_qhp)]


def is_refill(session: Session) -> bool:
    """§7.8: at least one REFILL record with added_ul > 0."""
    return any(isinstance(e, RefillEvent) and e.added_ul > 0 for e in session.events)


def counts(change: Change, profile: Profile) -> bool:
    """Whether a change is reprogramming under a profile (§3)."""
    if change.when != IN_SESSION or change.category == "device":
        return False
    # A concentration change alters the infusion rate: it counts under every profile (§3).
    return change.category in profile.categories or change.parameter in CONCENTRATION_DOSE


def code_session(
    session: Session, changes: Sequence[Change], rules: Rules
) -> tuple[CodeResult, ...]:
    """One result per configured profile, in the order the rules list them."""
    refill = is_refill(session)
    role = session.operator.role
    qhp = rules.is_qhp(role)
    results: list[CodeResult] = []
    for profile in rules.profiles:
        counted = tuple(c for c in changes if counts(c, profile))
        reprogrammed = bool(counted)
        procedure = procedure_code(refill=refill, reprogrammed=reprogrammed, physician_or_qhp=qhp)
        results.append(
            CodeResult(
                profile=profile.name,
                procedure=procedure,
                reprogrammed=reprogrammed,
                refill=refill,
                physician_or_qhp=qhp,
                counted=tuple(c.parameter for c in counted),
                counterfactual=_counterfactual(
                    session, changes, profile, procedure, counted, refill=refill, qhp=qhp
                ),
            )
        )
    return tuple(results)


def _names(items: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _with_categories(changes: Sequence[Change]) -> str:
    categories = list(dict.fromkeys(c.category for c in changes))
    return f"{_names([c.parameter for c in changes])} ({', '.join(categories)})"


def _counterfactual(
    session: Session,
    changes: Sequence[Change],
    profile: Profile,
    procedure: str,
    counted: Sequence[Change],
    *,
    refill: bool,
    qhp: bool,
) -> str:
    """One sentence: why this profile gives this code."""
    role = session.operator.role
    performer = _ROLE_PHRASES.get(role, f"a {role}")
    if refill:
        refill_clause = f"{performer} refilled" if qhp else f"{performer} (staff) refilled"
    else:
        refill_clause = "there was no refill"

    in_session = [c for c in changes if c.when == IN_SESSION]
    reverted = _names([c.parameter for c in changes if c.when == REVERTED_IN_SESSION])
    if counted:
        reason = f"{_with_categories(counted)} changed in session"
        joiner = " and "
    elif in_session:
        reason = (
            f"the only writes were {_with_categories(in_session)}, "
            f"which {profile.name} does not count"
        )
        joiner = ", and "
    elif session.programmed is None:
        reason = "nothing was transmitted to the pump"
        if reverted:
            reason += f" (the logged changes of {reverted} never reached it)"
        joiner = " and "
    elif reverted:
        reason = f"the only changes, of {reverted}, were changed back"
        joiner = " and "
    else:
        reason = "the transmission changed no setting"
        joiner = " and "
    sentence = (
        f"under {profile.name} this visit is {procedure} because {reason}{joiner}{refill_clause}"
    )
    outside = [c.parameter for c in changes if c.when not in (IN_SESSION, REVERTED_IN_SESSION)]
    if outside:
        sentence += f"; {_names(outside)} changed outside recorded sessions, which never counts"
    return sentence
