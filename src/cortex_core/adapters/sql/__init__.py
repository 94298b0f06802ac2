"""SQLAlchemy 2 async storage for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""
