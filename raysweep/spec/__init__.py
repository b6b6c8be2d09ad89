"""Reading and validating a sweep spec.

- ``loading``: strict, bounded YAML (duplicate keys, depth, aliases, size, encoding) and ``--set`` overrides;
- ``schema``: the table of sections and the typed, frozen :class:`Spec` that :func:`validate_spec` returns;
- ``sections``: the fixed-key sections (search, resources, tracking, ...) declared by their parameters;
- ``resources``: what one trial asks Ray for, and whether a node can ever give it.

Imports only the leaves, ``search`` (to check ``search.mode`` and ``scheduler.name`` against their registries,
so a plugin's mode or scheduler is accepted) and ``tracking`` (the tracking URI's scheme).
"""

from raysweep._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "Spec": "schema", "validate_spec": "schema", "load_spec_file": "loading", "apply_overrides": "loading",
    "trial_resources": "resources",
})
