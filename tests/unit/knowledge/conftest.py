"""Knowledge unit fixtures."""

from __future__ import annotations

import pytest

from proxy.context.budget import TokenCounter


@pytest.fixture(scope="session")
def counter() -> TokenCounter:
    return TokenCounter()
