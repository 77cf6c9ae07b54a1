"""NebulaExp Workbench helpers: thin layers over TRL, datasets, lm-eval and friends.

Notebooks import what they need from the submodules (one module per concern); this package
root stays import-light so that `nebula --help` and config validation do not load torch.
"""

__version__ = "0.1.0"
