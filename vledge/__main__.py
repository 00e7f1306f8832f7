import sys

from vledge.cli import main

sys.exit(main())
