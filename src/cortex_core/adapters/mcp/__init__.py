"""MCP servers as tool sources (the official ``mcp`` SDK), behind the ``ToolSource`` port."""
