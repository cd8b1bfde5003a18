"""The exceptions a kernel's entry checks raise when they refuse their arguments.

A refusal means nothing was computed and no array was touched: the layers
catch exactly these (``KernelArgumentError``) to send the call down the
checked path, which converts the arguments or raises the user-facing error.
Any other exception from a kernel is a real failure and propagates.
"""


class KernelArgumentError(Exception):
    """A kernel's entry checks refused an argument (dtype, layout, size or value)."""


class KernelTypeError(KernelArgumentError, TypeError):
    """Refused for its dtype or byte order."""


class KernelValueError(KernelArgumentError, ValueError):
    """Refused for its layout, shape, size or values (e.g. a label out of range)."""
