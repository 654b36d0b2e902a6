# Partial stubs for escnn 1.0.11: only `escnn.group` is stubbed; other attributes resolve to Any.
from _typeshed import Incomplete

from . import group as group

__title__: str
__summary__: str
__url__: str
__version__: str
__author__: str
__email__: str
__license__: str

def __getattr__(name: str) -> Incomplete: ...
