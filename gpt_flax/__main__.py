import sys

from gpt_flax.cli import main

sys.exit(main())
