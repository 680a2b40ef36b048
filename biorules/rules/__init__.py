"""Learning rules for the rate network, one module per rule, named as on the CLI (spec §3).

``RULE_NAMES`` is a plain tuple (no torch import) for CLI choices; ``get_rule(name, **options)``
builds a rule object implementing :class:`biorules.rules.base.Rule`; ``RULES`` maps each name to its
default rule (built on first access).

| name           | W, U, b                                   | module   |
|----------------|-------------------------------------------|----------|
| bptt           | exact (autograd)                          | bptt     |
| tbptt          | truncated δ, window K (chunk or sliding)  | tbptt    |
| eprop          | ψ ⊙ L with presynaptic ε, B = Vᵀ          | eprop    |
| eprop-random   | as eprop, fixed random B                  | eprop    |
| rflo           | L with P traces (Murray 2019)             | rflo     |
"""

from __future__ import annotations

import dataclasses
from typing import Any

from biorules.errors import InputError

RULE_NAMES = ("bptt", "tbptt", "eprop", "eprop-random", "rflo")


def _factory(name: str):
    if name == "bptt":
        from biorules.rules.bptt import BPTT

        return BPTT, {}
    if name == "tbptt":
        from biorules.rules.tbptt import TBPTT

        return TBPTT, {}
    if name in ("eprop", "eprop-random"):
        from biorules.rules.eprop import Eprop

        return Eprop, {"name": name, "feedback": "symmetric" if name == "eprop" else "random"}
    from biorules.rules.rflo import RFLO

    return RFLO, {}


def get_rule(name: str, **options: Any):
    """The rate-network rule ``name`` with ``options`` (None values keep the default).

    Options: ``form`` (bptt, rflo), ``window`` and ``mode`` (tbptt), ``feedback`` (rflo) and
    ``feedback_seed`` (eprop-random, rflo); options a rule does not have are ignored only when None.
    """
    if name not in RULE_NAMES:
        raise InputError(f"unknown rule {name!r}; choose one of {', '.join(RULE_NAMES)}")
    cls, fixed = _factory(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    options = {k: v for k, v in options.items() if v is not None}
    unknown = set(options) - fields
    if unknown:
        raise InputError(f"rule {name} has no option(s) {', '.join(sorted(unknown))}")
    return cls(**{**fixed, **options})


def __getattr__(attr: str):
    if attr == "RULES":
        rules = {name: get_rule(name) for name in RULE_NAMES}
        globals()["RULES"] = rules
        return rules
    raise AttributeError(attr)
