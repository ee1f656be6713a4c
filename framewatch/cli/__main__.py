import sys

from framewatch.cli.main import main

sys.exit(main())
