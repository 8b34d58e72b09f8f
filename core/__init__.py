"""CNN Classroom core: data, models, training, metrics and the model store.

Nothing here imports a UI library, and importing ``core`` does not import torch: the
command line answers a cache hit without loading it.
"""

__version__ = "0.1.0"


class UserError(ValueError):
    """Bad input from a person (a flag, a path, a file): shown as one clear line, no traceback."""
