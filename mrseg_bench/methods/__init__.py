"""Methods under study; importing registers them."""

from . import dpersona  # noqa: F401
