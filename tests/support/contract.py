"""What docs/contracts.md promises, read from the document itself."""

from __future__ import annotations

import functools
import re
from pathlib import Path

CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"
_TABLE_START = "Reasons used by the contracts"
_REASON = re.compile(r"`([A-Z][A-Z0-9_]+)`")


@functools.cache
def contract_reasons() -> dict[str, frozenset[str]]:
    """``ErrorInfo`` reasons of the contract's table, by status code name."""
    text = CONTRACTS.read_text(encoding="utf-8")
    table = text[text.index(_TABLE_START) :]
    reasons: dict[str, frozenset[str]] = {}
    for line in table.splitlines()[1:]:
        if reasons and not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        reasons[cells[0].strip("`")] = frozenset(_REASON.findall(cells[1]))
    return reasons


def all_contract_reasons() -> frozenset[str]:
    return frozenset().union(*contract_reasons().values())
