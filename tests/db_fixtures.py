"""Database fixtures (SQLite file and a real PostgreSQL database per test run)."""
