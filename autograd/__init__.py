"""gradserve's autodiff engine: NumPy only.

    >>> from autograd import Tensor
    >>> x = Tensor(2.0, requires_grad=True)
    >>> y = (x ** 2 + 1) ** 3
    >>> y.backward(); float(x.grad)
    300.0
"""

from . import functions
from .cost import Cost, Limits
from .errors import (
                     ArityError,
                     AutogradError,
                     BadAttribute,
                     BadTensor,
                     CycleError,
                     DeadlineExceeded,
                     DtypeMismatch,
                     DuplicateId,
                     LimitExceeded,
                     SeedRequired,
                     ShapeMismatch,
                     UnknownId,
                     UnknownOp,
)
from .graph import Leaf, Plan, Result, evaluate, nonfinite, plan
from .registry import DTYPES, OPS, Attr, Op
from .tensor import Kind, Tensor, apply, backprop

__all__ = [
    "DTYPES", "OPS", "ArityError", "Attr", "AutogradError", "BadAttribute", "BadTensor", "Cost",
    "CycleError", "DeadlineExceeded", "DtypeMismatch", "DuplicateId", "Kind", "Leaf",
    "LimitExceeded", "Limits", "Op", "Plan", "Result", "SeedRequired", "ShapeMismatch",
    "Tensor", "UnknownId", "UnknownOp", "apply", "backprop", "evaluate", "functions",
    "nonfinite", "plan",
]
