"""Moved to :mod:`ran.modelio.convert`; ``ran.convert`` stays an alias of it for code written before."""

import sys

from ran.modelio import convert

sys.modules[__name__] = convert
