"""The built-in evidence tables (docs/coding-rules.md §3, §4, §6, §7.8, §7.12).

TOML files shipped as package data; `evidence.rules.load_rules` reads them and
any clinic-supplied files of the same names. This package holds no code.
"""
