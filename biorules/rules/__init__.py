"""Learning rules, one module per rule, one registry for both network kinds (docs/rules.md).

``RULE_NAMES`` and :data:`KIND_RULES` are plain tuples (no torch import) for CLI choices;
``get_rule(name, kind="rate", **options)`` builds the rule object (a
:class:`biorules.rules.base.Rule`) after checking that it is defined for ``kind`` and takes the
options given; ``RULES`` maps each name to its default rate rule (built on first access).

| name           | kinds     | W, U, b                                   | module   |
|----------------|-----------|-------------------------------------------|----------|
| bptt           | rate, lif | exact (autograd; LIF: surrogate gradient) | bptt     |
| tbptt          | rate      | truncated δ, window K (chunk or sliding)  | tbptt    |
| eprop          | rate, lif | ψ ⊙ L with eligibility traces, B = Vᵀ     | eprop    |
| eprop-random   | rate, lif | as eprop, fixed random B                  | eprop    |
| rflo           | rate      | L with P traces (Murray 2019)             | rflo     |

A new rule is one module and one row of :data:`_REGISTRY`.
"""

from __future__ import annotations

import importlib
from typing import Any

from biorules.errors import InputError

KINDS = ("rate", "lif")
_REGISTRY: dict[str, tuple[str, str, dict[str, Any], tuple[str, ...]]] = {
    # name: (module, class, fixed fields, kinds)
    "bptt": ("bptt", "BPTT", {}, ("rate", "lif")),
    "tbptt": ("tbptt", "TBPTT", {}, ("rate",)),
    "eprop": ("eprop", "Eprop", {"name": "eprop", "feedback": "symmetric"}, ("rate", "lif")),
    "eprop-random": ("eprop", "Eprop", {"name": "eprop-random", "feedback": "random"}, ("rate", "lif")),
    "rflo": ("rflo", "RFLO", {}, ("rate",)),
}
RULE_NAMES = tuple(_REGISTRY)
KIND_RULES = {kind: tuple(n for n, entry in _REGISTRY.items() if kind in entry[3]) for kind in KINDS}
"""The rules defined for each network kind."""


def rules_for(kind: str) -> tuple[str, ...]:
    """Names of the rules defined for networks of ``kind`` (``rate`` or ``lif``)."""
    if kind not in KIND_RULES:
        raise InputError(f"unknown model {kind!r}; choose one of {', '.join(KINDS)}")
    return KIND_RULES[kind]


def check_rule(name: str, kind: str = "rate") -> None:
    """InputError (one line) for an unknown rule or one not defined for ``kind``."""
    names = rules_for(kind)
    if name not in _REGISTRY:
        raise InputError(f"unknown rule {name!r}; choose one of {', '.join(RULE_NAMES)}")
    if name not in names:
        raise InputError(f"rule {name!r} is not defined for model {kind!r}; it has {', '.join(names)}")


def rule_options(name: str, kind: str = "rate") -> tuple[str, ...]:
    """The options rule ``name`` takes for networks of ``kind``."""
    check_rule(name, kind)
    module, cls_name, _, _ = _REGISTRY[name]
    return tuple(getattr(importlib.import_module(f"biorules.rules.{module}"), cls_name).options[kind])


def get_rule(name: str, kind: str = "rate", **options: Any):
    """The rule ``name`` for networks of ``kind`` with ``options`` (None values keep the default).

    Options per rule and kind: ``form`` (bptt and rflo, rate), ``window`` and ``mode`` (tbptt),
    ``feedback`` (rflo) and ``feedback_seed`` (eprop-random and rflo; one int, or a tuple with one
    seed per member of a stack). An option the rule does not take for ``kind`` is refused.
    """
    check_rule(name, kind)
    module, cls_name, fixed, _ = _REGISTRY[name]
    cls = getattr(importlib.import_module(f"biorules.rules.{module}"), cls_name)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = set(options) - set(cls.options[kind])
    if unknown:
        raise InputError(f"rule {name} ({kind}) has no option(s) {', '.join(sorted(unknown))}")
    return cls(**{**fixed, **options})


def __getattr__(attr: str):
    if attr == "RULES":
        rules = {name: get_rule(name) for name in RULE_NAMES}
        globals()["RULES"] = rules
        return rules
    raise AttributeError(attr)
