import sys

from hf_trust.cli import main

sys.exit(main())
