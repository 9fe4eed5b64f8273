import sys

from speedtrace.cli import main

sys.exit(main())
