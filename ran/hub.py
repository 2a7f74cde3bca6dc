"""Moved to :mod:`ran.modelio.hub`; ``ran.hub`` stays an alias of it for code written before."""

import sys

from ran.modelio import hub

sys.modules[__name__] = hub
