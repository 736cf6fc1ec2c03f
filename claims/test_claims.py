"""Every registered claim on the session's model (`pytest -m claims`): the entry point lives in the package."""
from cos.testing import test_claim  # noqa: F401
