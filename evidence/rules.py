"""The evidence tables a clinic can extend without code: profiles, roles, thresholds, drugs.

Four TOML files ship in `evidence/data/` (docs/coding-rules.md §3 profiles, §2/§7.8 QHP
roles, §4/§7.12 discrepancy thresholds, §6/§7.13 HCPCS drug codes). A clinic puts
files of the same names in its own rules folder: `profiles.toml` and `drugs.toml`
there ADD profiles, drugs and aliases (and may set a known drug's container type,
§9.5); `roles.toml` and `thresholds.toml` there OVERRIDE what they name. Every file is
validated; a problem raises `RulesError` naming the file and the key. The billing
edits (§9.4) are a fifth table, loaded beside these by `evidence.edits.load_edits`.

`Rules.version` is `evidence-rules/<N>+<sha256 prefix>`: N is the table schema
version and the hash covers the canonical content of every table in force, so a
stored evidence record names exactly the tables that produced it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from parsers.errors import PumptrailError
from parsers.params import CATEGORIES, OPERATOR_ROLES

# Bumped when the shape of the tables (not their content) changes, or the rules that
# read them do (docs/coding-rules.md §8 safety flags: schema 2), so that stored
# evidence of earlier rules is told apart and re-derived by `pumptrail replay --apply`.
RULES_SCHEMA: Final = 2

PROFILES_FILE: Final = "profiles.toml"
ROLES_FILE: Final = "roles.toml"
THRESHOLDS_FILE: Final = "thresholds.toml"
DRUGS_FILE: Final = "drugs.toml"
RULE_FILES: Final = (PROFILES_FILE, ROLES_FILE, THRESHOLDS_FILE, DRUGS_FILE)

# Categories a profile may count; `device` settings never count (docs/coding-rules.md §3).
COUNTABLE_CATEGORIES: Final = tuple(c for c in CATEGORIES if c != "device")
ROLE_WORDS: Final = tuple(OPERATOR_ROLES.values())

_HASH_CHARS: Final = 12


class RulesError(PumptrailError, ValueError):
    """Raised when a rules file cannot be used: unreadable, not TOML, a key missing or
    of the wrong type or value. The message names the file, the key and what was wrong.
    """

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {message}")


def match_key(name: str) -> str:
    """How drug names compare: trimmed, case-insensitive (docs/coding-rules.md §7.2, §7.13)."""
    return name.strip().casefold()


@dataclass(frozen=True, slots=True)
class Profile:
    """One reading of "reprogramming" (docs/coding-rules.md §3)."""

    name: str
    categories: tuple[str, ...]
    held_by: str
    description: str
    # What a coder reads beside the key ("Rate or dose changes only (AMA examples)");
    # display only, so not part of the rules version.
    label: str = ""

    @property
    def title(self) -> str:
        """The label, or the key when the profile has none."""
        return self.label or self.name


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Discrepancy review thresholds by reservoir capacity (docs/coding-rules.md §7.12)."""

    default_ul: int
    by_capacity: Mapping[int, int]

    def for_capacity(self, capacity_ul: int | None) -> int:
        """The threshold for a capacity; the default for any other or unknown capacity."""
        if capacity_ul is None:
            return self.default_ul
        return self.by_capacity.get(capacity_ul, self.default_ul)


@dataclass(frozen=True, slots=True)
class DrugCode:
    """One HCPCS drug supply code (docs/coding-rules.md §6)."""

    name: str
    hcpcs: str
    unit_dose_ug: int
    description: str
    aliases: tuple[str, ...]
    # Container type for the drug-waste modifiers (docs/coding-rules.md §9.5):
    # single-dose containers take JZ or a JW line, multi-dose ones neither.
    single_dose: bool = True


@dataclass(frozen=True, slots=True)
class Rules:
    """Every table the evidence depends on, and the version naming them."""

    profiles: tuple[Profile, ...]
    default_profile: str
    qhp_roles: tuple[str, ...]
    thresholds: Thresholds
    drugs: tuple[DrugCode, ...]
    version: str
    _drug_index: Mapping[str, DrugCode] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, DrugCode] = {}
        for drug in self.drugs:
            for spelling in (drug.name, *drug.aliases):
                index.setdefault(match_key(spelling), drug)
        object.__setattr__(self, "_drug_index", MappingProxyType(index))

    def profile(self, name: str) -> Profile:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        raise KeyError(name)

    def is_qhp(self, role: str) -> bool:
        """Whether an operator role performs with the skill of a physician/QHP (§7.8)."""
        return role in self.qhp_roles

    def drug_for(self, name: str) -> DrugCode | None:
        """The code of a programmed drug name, by name or alias (§7.13); None when unmatched."""
        return self._drug_index.get(match_key(name))

    def drug_by_hcpcs(self, hcpcs: str) -> DrugCode | None:
        """The first drug of the table billed with an HCPCS code; None when no drug is."""
        wanted = hcpcs.strip().upper()
        return next((d for d in self.drugs if d.hcpcs.upper() == wanted), None)


# ---------------------------------------------------------------------------
# Loading


def load_rules(extra_dir: Path | None = None) -> Rules:
    """The built-in tables, extended or overridden by the files found in `extra_dir`."""
    package = resources.files("evidence.data")
    builtin = {
        name: (f"evidence/data/{name}", package.joinpath(name).read_text("utf-8"))
        for name in RULE_FILES
    }

    profiles, default_profile = _profiles(*builtin[PROFILES_FILE], base=None)
    roles = _roles(*builtin[ROLES_FILE])
    thresholds = _thresholds(*builtin[THRESHOLDS_FILE], base=None)
    drugs = _drugs(*builtin[DRUGS_FILE], base=())

    if extra_dir is not None:
        for name in RULE_FILES:
            path = extra_dir / name
            if not path.is_file():
                continue
            try:
                text = path.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise RulesError(str(path), "", f"cannot read: {exc}") from exc
            if name == PROFILES_FILE:
                profiles, default_profile = _profiles(
                    str(path), text, base=(profiles, default_profile)
                )
            elif name == ROLES_FILE:
                roles = _roles(str(path), text)
            elif name == THRESHOLDS_FILE:
                thresholds = _thresholds(str(path), text, base=thresholds)
            else:
                drugs = _drugs(str(path), text, base=drugs)

    version = rules_version(profiles, default_profile, roles, thresholds, drugs)
    return Rules(
        profiles=profiles,
        default_profile=default_profile,
        qhp_roles=roles,
        thresholds=thresholds,
        drugs=drugs,
        version=version,
    )


@functools.cache
def default_rules() -> Rules:
    """The built-in tables, loaded once."""
    return load_rules()


def rules_version(
    profiles: Sequence[Profile],
    default_profile: str,
    roles: Sequence[str],
    thresholds: Thresholds,
    drugs: Sequence[DrugCode],
) -> str:
    """`evidence-rules/<N>+<sha256 prefix>` of the canonical JSON of every table."""
    canonical = {
        "schema": RULES_SCHEMA,
        "profiles": [
            {
                "name": p.name,
                "categories": list(p.categories),
                "held_by": p.held_by,
                "description": p.description,
            }
            for p in profiles
        ],
        "default_profile": default_profile,
        "qhp_roles": sorted(roles),
        "thresholds": {
            "default_ul": thresholds.default_ul,
            "by_capacity": sorted(thresholds.by_capacity.items()),
        },
        "drugs": [
            {
                "name": d.name,
                "hcpcs": d.hcpcs,
                "unit_dose_ug": d.unit_dose_ug,
                "description": d.description,
                "aliases": list(d.aliases),
                # The default (single-dose) is left out of the canonical form, so a
                # table that does not state the key names the same version as one
                # stating the default.
                **({} if d.single_dose else {"single_dose": False}),
            }
            for d in drugs
        ],
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return f"evidence-rules/{RULES_SCHEMA}+{digest}"


# ---------------------------------------------------------------------------
# Validation helpers: each names the file and the dotted key.


def _parse(file: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(file, "", f"not valid TOML: {exc}") from exc


def _only_keys(file: str, where: str, table: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in table:
        if key not in allowed:
            raise RulesError(
                file, _join(where, key), f"unknown key; expected one of {', '.join(allowed)}"
            )


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _text(file: str, key: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise RulesError(file, key, f"expected a string, found {_kind(value)}")
    if not allow_empty and not value.strip():
        raise RulesError(file, key, "expected a non-empty string")
    return value


def _positive_int(file: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RulesError(file, key, f"expected an integer, found {_kind(value)}")
    if value <= 0:
        raise RulesError(file, key, f"expected an integer greater than 0, found {value}")
    return value


def _boolean(file: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise RulesError(file, key, f"expected true or false, found {_kind(value)}")
    return value


def _text_list(file: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise RulesError(file, key, f"expected a list of strings, found {_kind(value)}")
    return tuple(_text(file, f"{key}[{i}]", item) for i, item in enumerate(value))


def _table_list(file: str, key: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise RulesError(
            file, key, f"expected an array of tables ([[{key}]]), found {_kind(value)}"
        )
    return value


def _required(file: str, where: str, table: Mapping[str, Any], key: str) -> Any:
    if key not in table:
        raise RulesError(file, _join(where, key), "missing")
    return table[key]


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------
# The four tables


def _profiles(
    file: str, text: str, *, base: tuple[tuple[Profile, ...], str] | None
) -> tuple[tuple[Profile, ...], str]:
    """profiles.toml: `default` and `[[profile]]` entries; extra files add profiles."""
    data = _parse(file, text)
    _only_keys(file, "", data, ("default", "profile"))
    profiles: list[Profile] = [] if base is None else list(base[0])
    seen = {p.name for p in profiles}
    for i, entry in enumerate(_table_list(file, "profile", data.get("profile", []))):
        where = f"profile[{i}]"
        _only_keys(file, where, entry, ("name", "label", "categories", "held_by", "description"))
        name = _text(file, f"{where}.name", _required(file, where, entry, "name"))
        if name != name.strip() or any(ch.isspace() for ch in name):
            raise RulesError(
                file, f"{where}.name", f"profile name {name!r} must not contain spaces"
            )
        if name in seen:
            raise RulesError(file, f"{where}.name", f"profile {name!r} is already defined")
        seen.add(name)
        categories = _text_list(
            file, f"{where}.categories", _required(file, where, entry, "categories")
        )
        for k, category in enumerate(categories):
            if category == "device":
                raise RulesError(
                    file,
                    f"{where}.categories[{k}]",
                    "device settings never count as reprogramming (docs/coding-rules.md §3)",
                )
            if category not in COUNTABLE_CATEGORIES:
                raise RulesError(
                    file,
                    f"{where}.categories[{k}]",
                    f"unknown category {category!r}; expected one of "
                    f"{', '.join(COUNTABLE_CATEGORIES)}",
                )
        if len(set(categories)) != len(categories):
            raise RulesError(file, f"{where}.categories", "a category is listed twice")
        held_by = _text(file, f"{where}.held_by", entry.get("held_by", ""), allow_empty=True)
        description = _text(
            file, f"{where}.description", entry.get("description", ""), allow_empty=True
        )
        label = _text(file, f"{where}.label", entry.get("label", ""), allow_empty=True).strip()
        profiles.append(Profile(name, categories, held_by, description, label))
    if not profiles:
        raise RulesError(file, "profile", "no profile defined")
    if "default" in data:
        default = _text(file, "default", data["default"])
    elif base is not None:
        default = base[1]
    else:
        raise RulesError(file, "default", "missing")
    if default not in seen:
        raise RulesError(file, "default", f"names no defined profile: {default!r}")
    return tuple(profiles), default


def _roles(file: str, text: str) -> tuple[str, ...]:
    """roles.toml: `qhp_roles`, the operator roles counting as physician/QHP (§7.8)."""
    data = _parse(file, text)
    _only_keys(file, "", data, ("qhp_roles",))
    roles = _text_list(file, "qhp_roles", _required(file, "", data, "qhp_roles"))
    for i, role in enumerate(roles):
        if role not in ROLE_WORDS:
            raise RulesError(
                file,
                f"qhp_roles[{i}]",
                f"unknown operator role {role!r}; expected one of {', '.join(ROLE_WORDS)}",
            )
    # Stored in the role table's order, so the version does not depend on list order.
    return tuple(word for word in ROLE_WORDS if word in roles)


def _thresholds(file: str, text: str, *, base: Thresholds | None) -> Thresholds:
    """thresholds.toml: `default_ul` and `[[capacity]]` entries; extra files override."""
    data = _parse(file, text)
    _only_keys(file, "", data, ("default_ul", "capacity"))
    if "default_ul" in data:
        default = _positive_int(file, "default_ul", data["default_ul"])
    elif base is not None:
        default = base.default_ul
    else:
        raise RulesError(file, "default_ul", "missing")
    by_capacity: dict[int, int] = {} if base is None else dict(base.by_capacity)
    listed: set[int] = set()
    for i, entry in enumerate(_table_list(file, "capacity", data.get("capacity", []))):
        where = f"capacity[{i}]"
        _only_keys(file, where, entry, ("capacity_ul", "threshold_ul"))
        capacity = _positive_int(
            file, f"{where}.capacity_ul", _required(file, where, entry, "capacity_ul")
        )
        if capacity in listed:
            raise RulesError(file, f"{where}.capacity_ul", f"capacity {capacity} is listed twice")
        listed.add(capacity)
        by_capacity[capacity] = _positive_int(
            file, f"{where}.threshold_ul", _required(file, where, entry, "threshold_ul")
        )
    return Thresholds(default, MappingProxyType(dict(sorted(by_capacity.items()))))


def _drugs(file: str, text: str, *, base: Sequence[DrugCode]) -> tuple[DrugCode, ...]:
    """drugs.toml: `[[drug]]` entries; an entry naming a known drug adds aliases and may
    set `single_dose` (the container a clinic's supplier ships, docs/coding-rules.md §9.5).
    """
    data = _parse(file, text)
    _only_keys(file, "", data, ("drug",))
    drugs: list[DrugCode] = list(base)
    owner: dict[str, str] = {}
    for drug in drugs:
        for spelling in (drug.name, *drug.aliases):
            owner[match_key(spelling)] = drug.name
    for i, entry in enumerate(_table_list(file, "drug", data.get("drug", []))):
        where = f"drug[{i}]"
        _only_keys(
            file,
            where,
            entry,
            ("name", "hcpcs", "unit_dose_ug", "description", "aliases", "single_dose"),
        )
        name = _text(file, f"{where}.name", _required(file, where, entry, "name")).strip()
        aliases = _text_list(file, f"{where}.aliases", entry.get("aliases", []))
        single_dose: bool | None = None
        if "single_dose" in entry:
            single_dose = _boolean(file, f"{where}.single_dose", entry["single_dose"])
        known = next((k for k, d in enumerate(drugs) if match_key(d.name) == match_key(name)), None)
        checks = [(f"{where}.aliases[{k}]", alias) for k, alias in enumerate(aliases)]
        if known is None:
            hcpcs = _text(file, f"{where}.hcpcs", _required(file, where, entry, "hcpcs")).strip()
            unit = _positive_int(
                file, f"{where}.unit_dose_ug", _required(file, where, entry, "unit_dose_ug")
            )
            description = _text(
                file, f"{where}.description", entry.get("description", ""), allow_empty=True
            )
            current = DrugCode(name, hcpcs, unit, description, (), single_dose is not False)
            drugs.append(current)
            known = len(drugs) - 1
            checks.insert(0, (f"{where}.name", name))
        else:
            current = drugs[known]
            # An entry naming a known drug may only add aliases, never redefine it.
            for key, have in (
                ("hcpcs", current.hcpcs),
                ("unit_dose_ug", current.unit_dose_ug),
                ("description", current.description),
            ):
                if key in entry and entry[key] != have:
                    raise RulesError(
                        file,
                        f"{where}.{key}",
                        f"drug {current.name!r} is already defined with {key} {have!r}; "
                        "a later file may only add aliases",
                    )
        added: list[str] = []
        for key_path, spelling in checks:
            key = match_key(spelling)
            holder = owner.get(key)
            if holder is not None and holder != current.name:
                raise RulesError(file, key_path, f"{spelling!r} already names drug {holder!r}")
            if holder is None:
                owner[key] = current.name
                if key != match_key(current.name):
                    added.append(spelling.strip())
        drugs[known] = DrugCode(
            current.name,
            current.hcpcs,
            current.unit_dose_ug,
            current.description,
            current.aliases + tuple(added),
            current.single_dose if single_dose is None else single_dose,
        )
    return tuple(drugs)
