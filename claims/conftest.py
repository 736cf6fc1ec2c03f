"""Fixtures of the claims tier: the settings of the tier the run is in."""
import pytest

from cos.claimkit import settings_for


@pytest.fixture(scope="session")
def cos_tier(pytestconfig, cos_system, cos_device) -> str:
    tier = pytestconfig.getoption("--cos-tier")
    if tier != "auto":
        return tier
    if "cos_model.json" not in set(p.name for p in __import__("pathlib").Path(cos_system.path).iterdir()):
        return "full"
    return "gpu" if cos_device.startswith("cuda") else "cpu"


@pytest.fixture(scope="session")
def cos_settings(cos_system, cos_tier):
    return settings_for(cos_system, cos_tier)
