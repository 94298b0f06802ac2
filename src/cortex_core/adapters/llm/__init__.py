"""Language-model providers behind the :class:`~cortex_core.ports.LlmProvider` port."""
