"""Cross-entropy: the baseline every method is compared with (the base class's behaviour)."""

from trainables.methods import METHODS
from trainables.methods.base import Method


@METHODS.add
class CrossEntropy(Method):
    name = "ce"
    description = "softmax cross-entropy, mean over the batch (the baseline)"
