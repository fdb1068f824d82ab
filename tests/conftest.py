import os
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from cases import BACKENDS, VARIANTS, variant

# Deterministic under CI (CI=true): derandomized examples, no deadline (a shared machine is noisy).
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=100,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=100)
settings.register_profile("thorough", deadline=None, max_examples=3000)   # by hand, to hunt
settings.load_profile(os.environ.get("FASTBP_HYPOTHESIS")
                      or ("ci" if os.environ.get("CI") == "true" else "dev"))


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=VARIANTS)
def linear_backend(request):
    """A backend with one of its linear_head code paths forced (see cases.VARIANTS)."""
    with variant(request.param) as name:
        yield name


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def rng(request):
    # one seed per test, derived from its name: order-independent and reproducible
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
