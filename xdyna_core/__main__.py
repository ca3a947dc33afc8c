import sys

from xdyna_core.cli import main

sys.exit(main())
