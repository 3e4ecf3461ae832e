"""``python -m data_download ...``"""

from .cli import main

raise SystemExit(main())
