"""`python -m tfp_flows.cli`: the `tfp-flows` command."""

import sys

from tfp_flows.cli import main

if __name__ == "__main__":
    sys.exit(main())
