"""Read a model formula with formulae: the family, the response columns and the cell keys.

Nothing here touches the rows: the formula is parsed by formulae's parser, and the result says
which columns the group-by must keep apart (the keys of the cells: every column a term reads,
inside expressions too) and which it must add up (the response, the exposure).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

FAMILIES = ("normal", "binomial", "bernoulli", "poisson")
ALIASES = {"gaussian": "normal", "logistic": "bernoulli"}
# the names a formula's expressions may call besides formulae's own (I, C, offset, ...)
NAMESPACE = {"np": np, "numpy": np, "log": np.log, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs}
# formulae's transforms that give each value alone (numpy's ufuncs do too)
ELEMENTWISE = ("I", "C", "offset")


@dataclass(frozen=True)
class FormulaSpec:
    """What a formula asks for, before any data is read.

    Example
    -------
    >>> spec = parse_formula("p(opens, sent) ~ 1 + trial_control + (1|distribution)")
    >>> spec.family, spec.response
    ('binomial', {'successes': 'opens', 'trials': 'sent'})
    >>> spec.keys(["opens", "sent", "trial_control", "distribution"])
    ('distribution', 'trial_control')
    """

    formula: str
    family: str
    response: dict[str, str]
    # (term, column) for every column a term reads; names inside expressions that formulae could
    # also find among its functions (a column by that name wins); terms to check row by row
    reads: tuple[tuple[str, str], ...]
    may_read: tuple[str, ...]
    row_checks: tuple[str, ...]
    # the right-hand side without its group terms, and each group term's name and columns
    common: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    intercept_only_factor: str | None
    # correlated blocks: one per group term written with several coefficients, ``(1 + x|g)``
    # or ``(x|g)``: the block's name (``"1 + x|g"``) and its terms' names (``("1|g", "x|g")``)
    blocks: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # the common part's intercept and columns, where it holds nothing else (formulae's design
    # of numeric columns is then the columns as they are); else None
    plain: tuple[bool, tuple[str, ...]] | None = None

    def keys(self, columns: Collection[str]) -> tuple[str, ...]:
        """The columns the cells keep apart, sorted: every column the terms read.

        A name that is neither among ``columns`` nor a function formulae knows is an error that
        names its term.
        """
        for term, name in self.reads:
            if name not in columns:
                raise ValueError(
                    f"formula: no column {name!r} in the data (term {term!r}); columns are "
                    f"{', '.join(map(repr, columns))}"
                )
        found = {name for _, name in self.reads} | {n for n in self.may_read if n in columns}
        return tuple(sorted(found))


def environment():
    """Where formulae finds a formula's names that are not columns: its own transforms and
    encodings, then :data:`NAMESPACE` (nothing from the caller's frame)."""
    from formulae.categorical import ENCODINGS
    from formulae.environment import Environment
    from formulae.transforms import TRANSFORMS

    return Environment([{**TRANSFORMS, **ENCODINGS}, NAMESPACE])


def expand_double_bars(formula: str) -> str:
    """lme4's uncorrelated terms ``(x || g)`` written as formulae reads them: one term per
    coefficient, ``(1|g) + (0 + x|g)`` (no intercept where the expression drops it).

    Example
    -------
    >>> expand_double_bars("y ~ x + (1 + x || g)")
    'y ~ x + (1|g) + (0 + x|g)'
    """

    def expand(match: re.Match) -> str:
        parts = [p.strip() for p in _summands(match.group(1))]
        intercept = not any(p in ("0", "-1") for p in parts)
        slopes = [p for p in parts if p not in ("0", "1", "-1")]
        factor = match.group(2).strip()
        terms = [f"(1|{factor})"] if intercept else []
        return " + ".join(terms + [f"(0 + {p}|{factor})" for p in slopes])

    return re.sub(r"\(([^()|]*(?:\([^()]*\)[^()|]*)*)\|\|([^()|]+)\)", expand, formula)


def describe(formula: str):
    """formulae's description of ``formula``; a ValueError unless its parser reads all of it.
    lme4's ``(x || g)`` is read as its uncorrelated terms (:func:`expand_double_bars`)."""
    from formulae import model_description
    from formulae.parser import Parser
    from formulae.scanner import Scanner

    formula = expand_double_bars(formula)
    try:
        parser = Parser(Scanner(formula).scan())
        parser.parse()
        if not parser.at_end():  # formulae stops quietly before a token it cannot place
            raise ValueError(f"unexpected {parser.peek().lexeme!r}")
        return model_description(formula)
    except Exception as err:  # formulae raises its own error types
        raise ValueError(f"formula: could not parse {formula!r}: {err}") from None


def is_formula(spec: object) -> bool:
    """Whether ``spec`` is a model formula: a string that formulae's parser reads whole, with a
    response on the left of ``~``. Paths such as ``~/visits.csv`` or ``data~1.csv`` are none;
    a name such as ``a~b.csv`` is one (the column ``b.csv`` on the right, as in R's
    ``Sepal.Length``), so a caller that also takes paths looks for the file first.

    Example
    -------
    >>> is_formula("y ~ 1 + (1|g)"), is_formula("~/visits.csv"), is_formula("data~1.csv")
    (True, False, False)
    """
    return isinstance(spec, str) and _reads_as_formula(spec)


@functools.lru_cache(maxsize=256)
def _reads_as_formula(text: str) -> bool:
    try:
        return describe(text).response is not None
    except ValueError:
        return False


def components(term) -> list:
    """The variables and calls of a term; of a group term, its expression's and its factor's."""
    if type(term).__name__ == "GroupSpecificTerm":
        return [*getattr(term.expr, "components", []), *term.factor.components]
    return list(getattr(term, "components", []))


def _calls(node) -> Iterator:
    """The calls in one of formulae's lazy expressions, outermost first."""
    if hasattr(node, "callee"):
        yield node
    for arg in (*getattr(node, "args", ()), *getattr(node, "kwargs", {}).values()):
        yield from _calls(arg)


def _term_names(term, formula: str) -> tuple[list[str], list[str], bool]:
    """The columns ``term`` reads, the names it reads that may be functions instead, and whether
    it calls a function that is not known to give each value alone."""
    from formulae.terms.call_resolver import get_function_from_module

    env = environment()
    columns, maybe, check = [], [], False
    for comp in components(term):
        call = getattr(comp, "call", None)
        if call is None:
            columns.append(comp.name)
            continue
        for node in _calls(call):
            try:
                function = get_function_from_module(node.callee, env)
            except (KeyError, AttributeError):
                raise ValueError(
                    f"formula: term {term.name!r} calls {node.callee}(), which is not defined; "
                    f"use numpy's functions as np.name(...) ({', '.join(NAMESPACE)} are known)"
                ) from None
            if getattr(function, "__stateful_transform__", False):
                raise ValueError(
                    f"formula: {node.callee}() is computed over all rows, but poolwise fits "
                    f"cells of identical rows; transform the column before fitting ({formula!r})"
                )
            check |= not (isinstance(function, np.ufunc) or node.callee in ELEMENTWISE)
        for name in sorted(comp.var_names - {""}):  # "" stands for a literal
            (maybe if name in env.namespace else columns).append(name)
    return columns, maybe, check


def _callee(term) -> str | None:
    comps = getattr(term, "components", [])
    if len(comps) == 1 and hasattr(comps[0], "call"):
        return comps[0].call.callee
    return None


def _variable_args(call, what: str) -> list[str]:
    names = []
    for arg in call.args:
        if not hasattr(arg, "name") or hasattr(arg, "callee"):
            raise ValueError(f"formula: {what} must name columns, got {call}")
        names.append(arg.name)
    return names


def _summands(rhs: str) -> list[str]:
    """The top-level summands of a right-hand side (``+`` outside parentheses)."""
    parts, depth, current = [], 0, []
    for ch in rhs:
        depth += (ch == "(") - (ch == ")")
        if ch == "+" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _is_group(summand: str) -> bool:
    s = summand.strip()
    return s.startswith("(") and s.endswith(")") and "|" in s


def _common_rhs(rhs: str) -> str:
    """The right-hand side without its group terms ``(expr|factor)``, top-level summands in
    parentheses that hold a ``|`` (formulae's implicit intercept when nothing is left)."""
    common = [p for p in _summands(rhs) if not _is_group(p)]
    return " + ".join(p.strip() for p in common) or "1"


def _blocks(rhs: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The correlated blocks of a right-hand side: each group summand with several coefficients
    (``(1 + x|g)``, or ``(x|g)`` with its implicit intercept) is one block, named by its
    coefficients (``"1 + x|g"``); lme4's nesting ``(1 + x|a/b)`` gives one block per factor,
    ``a`` and ``a:b``. A coefficient written in two summands, as lme4 allows in
    ``(1|g) + (x|g)`` (an intercept twice), is refused."""
    from formulae import model_description

    blocks, seen = [], {}
    for summand in _summands(rhs):
        if not _is_group(summand):
            continue
        terms = [
            t.name
            for t in model_description(summand.strip()).terms
            if type(t).__name__ == "GroupSpecificTerm"
        ]
        for name in terms:
            if name in seen:
                raise ValueError(
                    f"formula: {name!r} is in both {seen[name].strip()!r} and "
                    f"{summand.strip()!r} ((x|g) has an intercept of its own); write "
                    "(1 + x|g) for a correlated intercept and slope, or (1|g) + (0 + x|g) "
                    "(lme4's (x||g)) for independent ones"
                )
            seen[name] = summand
        by_factor: dict[str, list[str]] = {}
        for name in terms:
            by_factor.setdefault(name.split("|", 1)[1], []).append(name)
        for factor, names in by_factor.items():
            if len(names) > 1:
                exprs = [t.split("|", 1)[0] for t in names]
                blocks.append((f"{' + '.join(exprs)}|{factor}", tuple(names)))
    return tuple(blocks)


def _factor_column(component: Any, name: str) -> str:
    """The column of one part of a group factor: a column, or ``C(column)``."""
    if type(component).__name__ == "Variable":
        return component.name
    call = getattr(component, "call", None)
    args = getattr(call, "args", ())
    if getattr(call, "callee", None) == "C" and len(args) == 1 and hasattr(args[0], "name"):
        return args[0].name
    raise ValueError(
        f"formula: group term {name!r} groups by {component.name}; group by columns "
        "(or C(column)), and compute other groupings as columns before fitting"
    )


def parse_formula(
    formula: str, family: str | None = None, exposure: str | None = None
) -> FormulaSpec:
    """Parse ``formula`` (formulae's lme4-style syntax) and decide the family.

    The family follows from the response when ``family`` is None: ``p(successes, trials)`` is
    binomial, an ``exposure`` column or an ``offset(log(x))`` term makes it Poisson, anything else
    is normal. ``family="bernoulli"`` reads a 0/1 (or boolean) response row by row.

    Example
    -------
    >>> parse_formula("c ~ 1 + (1|pump)", exposure="t").family
    'poisson'
    """
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a str, got {type(formula).__name__}")
    if formula.count("~") != 1:
        raise ValueError(
            f"formula: expected one '~' between the response and the terms, got {formula!r}"
        )
    if family is not None:
        if not isinstance(family, str):
            raise TypeError(f"family must be a str, got {type(family).__name__}")
        family = ALIASES.get(family, family)
        if family not in FAMILIES:
            raise ValueError(
                f"family must be one of {', '.join(map(repr, FAMILIES))}, got {family!r}"
            )
    if exposure is not None and not isinstance(exposure, str):
        raise TypeError(f"exposure: expected a column name (str), got {type(exposure).__name__}")
    return _parse(formula, family, exposure)


@dataclass(frozen=True)
class _Read:
    """What the parser found in a formula: the response's call (``p``/``prop`` or None) and its
    columns, the column of an ``offset(log(column))``, each term's name with the columns it
    reads, the names it reads that may be functions and whether it needs the row-by-row check,
    each group term's name and factor columns (and whether its factor is one column), the
    correlated blocks, and the common part's intercept and columns where it holds nothing else
    (else None)."""

    response: tuple[str | None, list[str]]
    offset: str | None
    terms: list[tuple[str, list[str], list[str], bool]]
    names: list[str]
    groups: list[tuple[str, tuple[str, ...], bool]]
    blocks: tuple[tuple[str, tuple[str, ...]], ...]
    plain: tuple[bool, tuple[str, ...]] | None


def _plain(terms: list) -> tuple[bool, tuple[str, ...]] | None:
    """Whether formulae's common terms hold an intercept, and their columns, where every other
    term is one column as it is (no call, no interaction); else None."""
    columns = []
    for term in terms:
        if term.name == "Intercept":
            continue
        comps = getattr(term, "components", [])
        if len(comps) != 1 or type(comps[0]).__name__ != "Variable":
            return None
        columns.append(comps[0].name)
    return any(t.name == "Intercept" for t in terms), tuple(columns)


def _read_formulae(formula: str) -> _Read:
    """The formula read by formulae's parser."""
    desc = describe(formula)
    if desc.response is None:
        raise ValueError(f"formula: no response on the left of '~' in {formula!r}")
    rterm = desc.response.term
    callee = _callee(rterm)
    if callee in ("p", "prop"):
        args = _variable_args(rterm.components[0].call, "p(successes, trials)")
        if len(args) != 2:
            raise ValueError(
                f"formula: p() takes two columns, successes and trials, got {len(args)}"
            )
        response = (callee, args)
    else:
        names = sorted(rterm.var_names)
        if callee is not None or len(names) != 1:
            raise ValueError(
                f"formula: the response must be one column or p(successes, trials), got {rterm}"
            )
        response = (None, names)
    offsets = [t for t in desc.terms if _callee(t) == "offset"]
    if len(offsets) > 1:
        raise ValueError("formula: give at most one offset(log(column)) term")
    column = None
    if offsets:
        inner = offsets[0].components[0].call.args
        ok = (
            len(inner) == 1
            and getattr(inner[0], "callee", None) in ("log", "np.log", "numpy.log")
            and len(inner[0].args) == 1
            and hasattr(inner[0].args[0], "name")
            and not hasattr(inner[0].args[0], "callee")
        )
        if not ok:
            raise ValueError(
                "formula: only offset(log(column)) is supported, the exposure of a Poisson "
                f"model; got {offsets[0].name}"
            )
        column = inner[0].args[0].name
    terms = [
        (term.name, *_term_names(term, formula)) for term in desc.terms if _callee(term) != "offset"
    ]
    groups = [t for t in desc.terms if type(t).__name__ == "GroupSpecificTerm"]
    return _Read(
        response,
        column,
        terms,
        [getattr(t, "name", "") for t in desc.terms],
        [
            (
                g.name,
                tuple(_factor_column(c, g.name) for c in g.factor.components),
                len(g.factor.components) == 1
                and type(g.factor.components[0]).__name__ == "Variable",
            )
            for g in groups
        ],
        _blocks(expand_double_bars(formula).split("~", 1)[1]),
        _plain([t for t in desc.terms if t not in groups and _callee(t) != "offset"]),
    )


@functools.lru_cache(maxsize=256)
def _parse(formula: str, family: str | None, exposure: str | None) -> FormulaSpec:
    """:func:`parse_formula` of arguments already checked (the same formula is read once)."""
    read = _read_formulae(formula)
    callee, args = read.response
    if callee in ("p", "prop"):
        if family not in (None, "binomial"):
            raise ValueError(f"formula: p(successes, trials) is a binomial response, not {family}")
        family = "binomial"
        response = {"successes": args[0], "trials": args[1]}
    else:
        response = {"y": args[0]}
    if read.offset is not None:
        if exposure is not None and exposure != read.offset:
            raise ValueError(
                f"exposure: given both exposure={exposure!r} and offset(log({read.offset})); "
                "give one"
            )
        exposure = read.offset
    if exposure is not None:
        if family not in (None, "poisson"):
            raise ValueError(f"exposure: only a poisson model has an exposure, not {family}")
        family = "poisson"
    family = family or "normal"
    if family == "binomial" and "y" in response:
        raise ValueError(
            "formula: a binomial model needs p(successes, trials) on the left; for one 0/1 "
            "outcome per row use family='bernoulli'"
        )
    if family == "poisson":
        response = {"counts": response["y"]}
        if exposure is not None:
            response["exposure"] = exposure
    used = set(response.values())
    reads, may_read, row_checks = [], set(), []
    for name, columns, maybe, check in read.terms:
        reads += [(name, c) for c in dict.fromkeys(columns)]
        may_read |= set(maybe)
        if check:
            row_checks.append(name)
    both = ({c for _, c in reads} | may_read) & used
    if both:
        raise ValueError(
            f"formula: column(s) {', '.join(sorted(both))} appear on both sides of '~'"
        )
    factor = None
    if (
        sorted(read.names) == sorted(["Intercept", *(g for g, *_ in read.groups)])
        and len(read.groups) == 1
        and read.groups[0][0].startswith("1|")
        and read.groups[0][2]
        and family != "bernoulli"
    ):
        factor = read.groups[0][1][0]
    return FormulaSpec(
        formula=formula,
        family=family,
        response=response,
        reads=tuple(reads),
        may_read=tuple(sorted(may_read)),
        row_checks=tuple(row_checks),
        common=_common_rhs(expand_double_bars(formula).split("~", 1)[1]),
        groups=tuple((g, columns) for g, columns, _ in read.groups),
        intercept_only_factor=factor,
        blocks=read.blocks,
        plain=read.plain,
    )
