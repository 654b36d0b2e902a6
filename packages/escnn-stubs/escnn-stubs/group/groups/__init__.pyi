from _typeshed import Incomplete

from .cyclicgroup import CyclicGroup as CyclicGroup
from .dihedralgroup import DihedralGroup as DihedralGroup
from .factory import (
    cyclic_group as cyclic_group,
)
from .factory import (
    dihedral_group as dihedral_group,
)
from .factory import (
    full_ico_group as full_ico_group,
)
from .factory import (
    full_octa_group as full_octa_group,
)
from .factory import (
    ico_group as ico_group,
)
from .factory import (
    klein4_group as klein4_group,
)
from .factory import (
    octa_group as octa_group,
)
from .factory import (
    trivial_group as trivial_group,
)
from .ico import Icosahedral as Icosahedral
from .octa import Octahedral as Octahedral

# Partial stub: continuous groups and the other factories are not stubbed.
def __getattr__(name: str) -> Incomplete: ...
