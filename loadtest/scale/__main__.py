import sys

from loadtest.scale import main

sys.exit(main())
