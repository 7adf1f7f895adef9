"""The operator console at ``/console``: server-rendered pages, no external assets."""
