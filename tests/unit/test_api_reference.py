"""docs/api names everything the contracts define (docs/api is regenerated and drift-checked
by ``make generate`` / ``make check-generated``; this says the generator leaves nothing out)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import cortex
from google.protobuf import descriptor
from support.contract import contract_reasons

API = Path(__file__).resolve().parents[2] / "docs" / "api"


def _files() -> list[descriptor.FileDescriptor]:
    modules = [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(cortex.__path__, "cortex.")
        if info.name.endswith("_pb2")
    ]
    return [module.DESCRIPTOR for module in modules]


def _messages(message: descriptor.Descriptor) -> list[descriptor.Descriptor]:
    nested = [m for n in message.nested_types for m in _messages(n)]
    return [] if message.GetOptions().map_entry else [message, *nested]


def test_every_service_rpc_message_field_enum_and_value_is_on_its_package_page() -> None:
    missing = []
    for file in _files():
        page = (API / f"{file.package}.md").read_text(encoding="utf-8")
        names = [f"`{s.name}.{m.name}`" for s in file.services_by_name.values() for m in s.methods]
        names += [f"service `{s.name}`" for s in file.services_by_name.values()]
        messages = [m for top in file.message_types_by_name.values() for m in _messages(top)]
        enums = [*file.enum_types_by_name.values(), *[e for m in messages for e in m.enum_types]]
        for message in messages:
            names.append(f"message `{message.full_name.removeprefix(file.package + '.')}`")
            names += [f"| `{field.name}` | {field.number} |" for field in message.fields]
        for enum in enums:
            names.append(f"enum `{enum.full_name.removeprefix(file.package + '.')}`")
            names += [f"| `{value.name}` | {value.number} |" for value in enum.values]
        missing += [(file.name, name) for name in names if name not in page]

    assert len(_files()) >= 20
    assert missing == []


def test_every_status_code_and_reason_of_the_contract_is_in_the_errors_page() -> None:
    errors = (API / "errors.md").read_text(encoding="utf-8")
    sections = {
        block.split("`", 2)[1]: block for block in errors.split('<a id="')[1:] if "`" in block
    }

    # A code cell may carry a note ("`UNAVAILABLE` (always with `RetryInfo`)").
    by_code = {cell.split("`")[0]: reasons for cell, reasons in contract_reasons().items()}
    missing = [
        (code, reason)
        for code, reasons in by_code.items()
        for reason in reasons
        if f"`{reason}`" not in sections.get(code, "")
    ]

    assert set(by_code) <= set(sections)
    assert missing == []
    assert all(f"`{code}`" in errors for code in ("OK", "UNKNOWN", "DATA_LOSS"))
