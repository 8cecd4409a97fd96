"""`python -m workers` starts a worker, like `leaseflow worker`."""

from app.cli import main

raise SystemExit(main(["worker"]))
