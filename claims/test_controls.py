"""Every claim's positive and negative controls (default tier): the entry point lives in the package."""
from cos.testing import test_control  # noqa: F401
