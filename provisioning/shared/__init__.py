"""Shared mode: schema and database environments on one PostgreSQL server."""
