"""Moved to :mod:`ran.modelio.card`; ``ran.card`` stays an alias of it for code written before."""

import sys

from ran.modelio import card

sys.modules[__name__] = card
