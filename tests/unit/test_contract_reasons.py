"""Every ``ErrorInfo`` reason the code can send is in the contract's table."""

from __future__ import annotations

import ast
from pathlib import Path

from support.contract import all_contract_reasons

SRC = Path(__file__).resolve().parents[2] / "src" / "cortex_core"
#: Calls whose ``reason`` is a FieldViolation's own reason, not an ErrorInfo reason.
_VIOLATION_CALLS = {"FieldViolation"}


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _constant(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isupper():
        return node.value
    return None


def _passes_reason_on(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """True when the function hands its ``reason`` parameter to an error (not to a
    FieldViolation, whose reason is the violation's own)."""
    return any(
        isinstance(node, ast.Call)
        and _name(node.func) not in _VIOLATION_CALLS
        and any(
            k.arg == "reason" and isinstance(k.value, ast.Name) and k.value.id == "reason"
            for k in node.keywords
        )
        for node in ast.walk(function)
    )


def reasons_in(tree: ast.AST) -> set[str]:
    """Reasons named in one module: ``reason=`` arguments, ``default_reason``
    attributes, defaults of parameters called ``reason``, and constants passed
    positionally to this module's functions where their ``reason`` parameter is."""
    found: set[str] = set()
    positions: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args.args
            defaults = (
                dict(
                    zip(
                        [a.arg for a in args][-len(node.args.defaults) :],
                        node.args.defaults,
                        strict=False,
                    )
                )
                if node.args.defaults
                else {}
            )
            for index, arg in enumerate(args):
                if arg.arg == "reason" and _passes_reason_on(node):
                    positions[node.name] = index
                    value = _constant(defaults.get("reason"))
                    if value:
                        found.add(value)
            for arg, default in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True):
                if arg.arg == "reason" and (value := _constant(default)):
                    found.add(value)
        elif (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "default_reason" for t in node.targets)
            and (value := _constant(node.value))
        ):
            found.add(value)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _name(node.func) in _VIOLATION_CALLS:
            continue
        for keyword in node.keywords:
            if keyword.arg == "reason" and (value := _constant(keyword.value)):
                found.add(value)
        index = positions.get(_name(node.func))
        if index is not None and index < len(node.args) and (value := _constant(node.args[index])):
            found.add(value)
    return found


def test_the_collector_finds_reasons_in_each_form() -> None:
    source = """
class Gone(CortexError):
    default_reason = "GONE_AWAY"
def fail(reason: str = "DEFAULTED") -> None:
    raise errors.Unauthenticated("x", reason=reason)
def wrap(message, reason):
    return errors.Aborted(message, reason=reason)
def violation(field, reason):
    return InvalidArgument(field, [FieldViolation(field, "d", reason)])
violation("f", "VIOLATION_ONLY")
raise errors.NotFound("x", reason="BY_KEYWORD")
wrap("m", "BY_POSITION")
FieldViolation("f", "d", reason="NOT_AN_ERROR_REASON")
"""
    assert reasons_in(ast.parse(source)) == {"GONE_AWAY", "DEFAULTED", "BY_KEYWORD", "BY_POSITION"}


def test_every_reason_the_code_can_send_is_in_the_contract_table() -> None:
    sent: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        for reason in reasons_in(ast.parse(path.read_text(encoding="utf-8"))):
            sent.setdefault(reason, str(path.relative_to(SRC)))

    missing = {
        reason: where for reason, where in sent.items() if reason not in all_contract_reasons()
    }

    assert len(sent) > 40
    assert missing == {}
