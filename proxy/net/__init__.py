"""Outbound network safety: what the proxy may connect to on an operator's behalf."""
