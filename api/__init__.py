"""FastAPI facade: maps REST calls onto the service layer (workflow start, query, cancel)."""
