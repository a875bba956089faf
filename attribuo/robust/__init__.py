"""Robustness: adversarial attacks and metrics of how a model holds up under them.

Captum's ``captum.robust`` API: :class:`FGSM` and :class:`PGD` attacks, the
:class:`Perturbation` base class, :class:`AttackComparator` (a metric under
several attacks) and :class:`MinParamPerturbation` (the smallest attack
parameter that changes the prediction).
"""

from .comparator import ORIGINAL_KEY as ORIGINAL_KEY
from .comparator import AttackComparator
from .comparator import AttackInfo as AttackInfo
from .comparator import agg_metric as agg_metric
from .fgsm import FGSM
from .min_param import MinParamPerturbation
from .min_param import MinParamPerturbationMode as MinParamPerturbationMode
from .min_param import default_correct_fn as default_correct_fn
from .min_param import drange as drange
from .perturbation import Perturbation
from .pgd import PGD

__all__ = ["FGSM", "AttackComparator", "MinParamPerturbation", "Perturbation", "PGD"]
