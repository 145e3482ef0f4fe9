"""``python -m dispatchd_client.cli`` runs dispatchctl."""

import sys

from dispatchd_client.cli.app import main

sys.exit(main())
