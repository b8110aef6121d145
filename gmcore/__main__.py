"""``python -m gmcore ...`` runs the command line (see gmcore.cli)."""
import sys

from gmcore.cli import main

sys.exit(main())
