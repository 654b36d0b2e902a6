# Partial stubs for escnn.group (escnn 1.0.11): finite groups and their representations.
# Names that are not stubbed (SO2, O2, SO3, O3, HomSpace, DoubleGroup, so2_group, ...) resolve
# to Any through the module-level __getattr__ below instead of being reported as missing.
from _typeshed import Incomplete

from .directproduct import DirectProductGroup as DirectProductGroup
from .directproduct import direct_product as direct_product
from .group import Group as Group
from .group import GroupElement as GroupElement
from .groups.cyclicgroup import CyclicGroup as CyclicGroup
from .groups.dihedralgroup import DihedralGroup as DihedralGroup
from .groups.factory import (
    cyclic_group as cyclic_group,
)
from .groups.factory import (
    dihedral_group as dihedral_group,
)
from .groups.factory import (
    full_ico_group as full_ico_group,
)
from .groups.factory import (
    full_octa_group as full_octa_group,
)
from .groups.factory import (
    ico_group as ico_group,
)
from .groups.factory import (
    klein4_group as klein4_group,
)
from .groups.factory import (
    octa_group as octa_group,
)
from .groups.factory import (
    trivial_group as trivial_group,
)
from .groups.ico import Icosahedral as Icosahedral
from .groups.octa import Octahedral as Octahedral
from .irrep import IrreducibleRepresentation as IrreducibleRepresentation
from .representation import (
    Representation as Representation,
)
from .representation import (
    change_basis as change_basis,
)
from .representation import (
    directsum as directsum,
)
from .representation import (
    disentangle as disentangle,
)
from .representation import (
    homomorphism_space as homomorphism_space,
)

__cache_path__: str

def __getattr__(name: str) -> Incomplete: ...
