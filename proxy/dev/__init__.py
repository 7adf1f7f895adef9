"""Development tooling, apart from the serving code: ``proxy dev NAME``.

- ``mock``: the mock OpenAI-compatible upstream the tests and benchmarks run against;
- ``bench``: latency and throughput benchmarks, the bare relay, and the soak;
- ``chaos``: fault scenarios against real processes;
- ``voice``: the voice-engine stand-in (``proxy dev engine``).

Nothing outside ``proxy.dev`` imports it (``tests/unit/test_layers.py``); it may import
the serving code.
"""
