"""``python -m ckptdoctor`` runs the command line."""

import sys

from ckptdoctor.cli import main

sys.exit(main())
