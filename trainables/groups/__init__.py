"""Trial groups: several planned trials trained in one process, one after another (``loop``) or through one
stacked forward/backward per step (``fused``).

- :mod:`trainables.groups.group`: the group engine (``train_group``, member states, which members fuse);
- :mod:`trainables.groups.fused`: the fused engine (stacked parameters, per-member SGD, the fused pass);
- :mod:`trainables.groups.stacked`: hand-fused stacked forwards of the registered model families.

Nothing here registers anything: the model registry (:mod:`trainables.models`) holds only models.
"""
