"""``python -m neonflow.local serve``: the local Neon server process (started by ``local up``)."""

from __future__ import annotations

import logging
import sys

from neonflow.config import load_settings
from neonflow.errors import LocalNeonError, NeonflowError
from neonflow.local.server import serve


def main() -> int:
    if sys.argv[1:] != ["serve"]:
        sys.stderr.write("usage: python -m neonflow.local serve\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        serve(load_settings())
    except NeonflowError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except OSError as exc:  # the state folder's disk or file system, as the OS reports it
        sys.stderr.write(f"error: {exc}\n")
        return LocalNeonError.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
