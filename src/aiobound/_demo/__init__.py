"""The ``python -m aiobound demo`` experiment.

Nothing here is imported by :mod:`aiobound` itself. The modules split the
work by process:

* :mod:`._case` runs one case in a child process (stdlib and psutil only) and
  reports progress and its result as JSON lines on stdout;
* :mod:`._runner` starts one child per case and reads those lines;
* :mod:`._report` draws the live progress and the final table with rich;
* :mod:`._plot` draws RSS and the producer's lead over time with matplotlib.
"""

from __future__ import annotations
