"""`python -m cos ...` is the `cos` command."""
import sys

from cos.cli import main

sys.exit(main())
