"""Token counting without a model-specific tokenizer.

No tokenizer ships offline for every provider, so the default counter is a
documented estimate: one token per four characters of text (rounded up), plus
four tokens of per-message framing, which tracks OpenAI-style BPE within about
±25 % for English prose. Counts reported by a provider always replace the
estimate in stored messages.
"""

from __future__ import annotations

import math

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4


class EstimatedTokenCounter:
    def count(self, text: str) -> int:
        return math.ceil(len(text) / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD
