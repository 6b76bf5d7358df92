"""`python -m mprd.report <artefact> --runs <dir> ...`: see `mprd.report.cli`."""

import sys

from mprd.report.cli import main

sys.exit(main())
