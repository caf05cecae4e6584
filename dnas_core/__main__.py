"""``python -m dnas_core`` is the ``dnas`` command (used by torchrun and tests)."""

from .cli import main

raise SystemExit(main())
