import sys

from loadtest.chaos import main

sys.exit(main())
