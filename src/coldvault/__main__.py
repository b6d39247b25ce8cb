import sys

from coldvault.cli.main import main

sys.exit(main())
