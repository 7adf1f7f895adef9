"""Server-side tools: the registry (from SQL) and the runner (HTTP POST per call)."""
