"""Findings grouped by code, the advice said once per code: what the table and the HTML report show.

A finding's message says what is wrong with one tensor or layer and then what to do,
the same words for every finding of a code (``save with a Saver over all global
variables ...``). Six missing statistics are one problem with one fix, so the
renderers show one group per code: the words every message of the group shares (a
common ending, shown once), each finding's own part, and the advice once. A group
sits where its most severe finding sorts, and its findings keep their own severities
(``missing-in-checkpoint`` is an error for a trainable variable, an info for an
optimizer slot). The findings themselves are unchanged: JSON and HDF5 keep every
message whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from ckptdoctor.analysis.diagnose import CODES, SEVERITIES

__all__ = ["FindingGroup", "GroupItem", "group_findings"]

#: Where a message's advice may start: after one of these (the advice is never cut mid-clause).
_BOUNDARIES = (": ", "; ")
#: A shared ending shorter than this many words is left in each item (it says too little alone).
_MIN_SHARED_WORDS = 4


@dataclass(frozen=True)
class GroupItem:
    """One finding of a group: its own words (``text``), its severity, and the finding's fields."""

    text: str
    severity: str
    layer: str | None
    tensor: str | None
    message: str


@dataclass(frozen=True)
class FindingGroup:
    """The findings of one code.

    Attributes:
        severity: the most severe of its findings'.
        meaning: the code's one-line meaning (``diagnose.CODES``).
        shared: the ending every item's statement shares, shown once after "…" ("" when none).
        advice: what to do, shared by every message of the group ("" when the messages do not share it;
            each item's ``text`` is then its whole message).
        mixed: the findings are not all of ``severity`` (each item then shows its own).
    """

    severity: str
    code: str
    meaning: str
    shared: str
    advice: str
    items: tuple[GroupItem, ...]
    mixed: bool = False


def _balanced(text: str) -> bool:
    """No bracket left open: a boundary inside "(an optimizer slot; only ...)" is not one."""
    return text.count("(") == text.count(")") and text.count("[") == text.count("]")


def _positions(text: str, sub: str) -> list[int]:
    out, i = [], text.find(sub)
    while i >= 0:
        out.append(i)
        i = text.find(sub, i + 1)
    return out


def _advice_split(messages: list[str]) -> tuple[list[str], str]:
    """Each message's statement, and the longest advice that ends every message after a boundary."""
    if len(messages) < 2:
        return messages, ""
    first = messages[0]
    cuts = sorted(i for b in _BOUNDARIES for i in _positions(first, b) if _balanced(first[:i]))
    for i in cuts:  # earliest cut first: the longest shared advice
        advice = first[i + 2 :]
        if advice and all(m.endswith(first[i : i + 2] + advice) for m in messages):
            return [m[: len(m) - len(advice) - 2] for m in messages], advice
    return messages, ""


def _shared_ending(statements: list[str]) -> tuple[list[str], str]:
    """The words every statement ends with (at least ``_MIN_SHARED_WORDS``), and each one's own beginning."""
    if len(statements) < 2:
        return statements, ""
    words = [s.split(" ") for s in statements]
    n = 0
    while all(len(w) > n + 1 for w in words) and len({w[-1 - n] for w in words}) == 1:
        n += 1
    if n < _MIN_SHARED_WORDS:
        return statements, ""
    return [" ".join(w[:-n]).rstrip(",;:") for w in words], " ".join(words[0][-n:])


def _named(text: str, f) -> str:
    """The item's text, with its tensor when the message names neither it nor its layer."""
    if not f.tensor or f.tensor in f.message or (f.layer and f.layer in f.message):
        return text
    return f"{text} ({f.tensor})"


def group_findings(findings) -> list[FindingGroup]:
    """One group per code, most severe first, each group's findings most severe first (else as they come)."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    groups: dict[str, list] = {}
    for f in findings:
        groups.setdefault(f.code, []).append(f)
    out = []
    for code, group in groups.items():
        group = sorted(group, key=lambda f: rank.get(f.severity, len(rank)))  # stable: order within a severity kept
        statements, advice = _advice_split([f.message for f in group])
        texts, shared = _shared_ending(statements) if advice else (statements, "")
        items = tuple(GroupItem(_named(t, f), f.severity, f.layer, f.tensor, f.message) for f, t in zip(group, texts))
        severities = {f.severity for f in group}
        out.append(
            FindingGroup(group[0].severity, code, CODES.get(code, ""), shared, advice, items, mixed=len(severities) > 1)
        )
    return sorted(out, key=lambda g: rank.get(g.severity, len(rank)))  # stable: by code within a severity
