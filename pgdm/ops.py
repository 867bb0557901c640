"""Public namespace of the measurement operators: ``pgdm.ops.SuperResolution``, ``pgdm.ops.parse``, …"""
from .operators import *  # noqa: F401,F403
from .operators import __all__  # noqa: F401
