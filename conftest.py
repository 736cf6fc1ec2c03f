"""Root conftest: the `cos` plugin itself is registered through the `pytest11` entry point."""
import os

from hypothesis import settings

settings.register_profile("ci", deadline=None, max_examples=40)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

pytest_plugins = ["pytester"]
