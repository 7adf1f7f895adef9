"""``proxy chaos``: fault scenarios against real processes (development tooling).

Each scenario starts its own servers (proxy replicas, the mock upstream, a Redis with
AOF, a throwaway PostgreSQL), drives engine-like turns and callbacks, injects a fault
(``kill -9``, a Redis restart, a database outage across a proxy restart, an erasure
racing a write, thousands of model names) and counts, from what the stores hold
afterwards, how many acknowledged turns were recorded, lost or duplicated.
"""
