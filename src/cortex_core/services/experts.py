"""ListExperts and GetExpert: the operator's expert catalog (read at start,
the same for every user; any signed-in caller may read it).

``ExpertCatalog`` holds the experts and, for each, the model provider chain it
runs on (built by bootstrap from the LLM configuration and the expert's
``providers``); the task runner takes the chain from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cortex_core.domain.paging import Page, PageRequest, encode_token, invalid_page_token
from cortex_core.domain.tasks import Expert, expert_not_found
from cortex_core.ports import LlmProvider


class ExpertCatalog:
    """The configured experts, ordered by id, and the provider of each."""

    def __init__(self, experts: Sequence[Expert], providers: Mapping[str, LlmProvider]) -> None:
        self._experts = {expert.id: expert for expert in sorted(experts, key=lambda e: e.id)}
        missing = set(self._experts) - set(providers)
        if missing:
            raise ValueError(f"experts without a provider: {sorted(missing)}")
        self._providers = dict(providers)

    def get(self, expert_id: str) -> Expert:
        """Raise NotFound (EXPERT_NOT_FOUND) for an unknown id."""
        expert = self._experts.get(expert_id)
        if expert is None:
            raise expert_not_found()
        return expert

    def find(self, expert_id: str) -> Expert | None:
        return self._experts.get(expert_id)

    def provider(self, expert_id: str) -> LlmProvider:
        return self._providers[expert_id]

    def all(self) -> list[Expert]:
        return list(self._experts.values())


class Experts:
    """The use cases (no access check beyond being signed in, which the api's
    interceptor has done)."""

    def __init__(self, catalog: ExpertCatalog) -> None:
        self.catalog = catalog

    def list(self, page: PageRequest) -> Page[Expert]:
        """Experts ordered by name; the page token carries the last id returned.
        Raise InvalidArgument (INVALID_PAGE_TOKEN) for a token not from here."""
        experts = self.catalog.all()
        if page.after is not None:
            if len(page.after) != 2 or page.after[0] != "experts":
                raise invalid_page_token("use a token from the same listing")
            experts = [e for e in experts if e.id > page.after[1]]
        items = experts[: page.size]
        token = encode_token(("experts", items[-1].id)) if len(experts) > page.size else ""
        return Page(items=items, next_page_token=token)

    def get(self, expert_id: str) -> Expert:
        """Raise NotFound (EXPERT_NOT_FOUND)."""
        return self.catalog.get(expert_id)
