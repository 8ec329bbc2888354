"""``python -m actstore`` (used by ``torchrun -m actstore extract ...``)."""

from actstore.cli import main

raise SystemExit(main())
