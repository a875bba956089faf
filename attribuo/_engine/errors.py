"""Exception types raised for bad arguments.

Captum reports many argument problems with ``assert``; attribuo raises
``ValueError``/``TypeError`` that name the argument. The classes below also
derive from ``AssertionError`` so code written against Captum that catches
``AssertionError`` keeps working.
"""


class ArgumentValueError(ValueError, AssertionError):
    """An argument has the right type but an unusable value."""


class ArgumentTypeError(TypeError, AssertionError):
    """An argument has the wrong type."""
