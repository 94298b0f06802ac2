"""Cortex Core: the asyncio gRPC backend for AI-assistant products.

The hand-written application lives in ``cortex_core``; generated protobuf code
lives in the separate ``cortex`` package tree and is imported only by ``api``.
"""

__version__ = "0.1.0"
