import sys

from sainet.cli import main

sys.exit(main())
