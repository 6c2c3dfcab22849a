"""The exceptions of the partner API.

Every error a user can cause has its own class and a message that says what to change. All of them
derive from `PartnerError`, so a program can catch the family at once.
"""


class PartnerError(Exception):
    """Base class of every error raised by the partner API."""


class UnsupportedOperation(PartnerError, TypeError):
    """The partner does not offer this operation (`push` into an "out"-only partner, say)."""


class UnknownKey(PartnerError, KeyError):
    """A demux key that the partner never returned from `open`, or one already closed."""

    def __str__(self):  # KeyError quotes its argument; a sentence reads better
        return str(self.args[0]) if self.args else "unknown demux key"


class FlowTemplateError(PartnerError, ValueError):
    """A flow template such as ``"eth/ipv4/udp"`` that is malformed or names an unknown layer."""


class FlowAttributeError(PartnerError, ValueError):
    """A flow or data attribute with a bad name or value; `field` names the attribute."""

    def __init__(self, field, message):
        super().__init__(f"flow attribute {field!r}: {message}")
        self.field = field


class WouldBlock(PartnerError):
    """The partner cannot accept (push) or deliver (pull) now; try again later.

    This is backpressure, not loss: nothing was consumed.
    """


class EndOfStream(PartnerError):
    """The partner has no more data and never will (end of a file, peer closed the connection)."""


class PeerLost(PartnerError):
    """The partner on the other side went away in the middle of a flow."""


class BufferOpError(PartnerError):
    """A buffer operation (`get`, `alloc`, `free`) that cannot be carried out."""


class DoubleFree(BufferOpError):
    """A buffer freed more often than it was allocated and taken with `get`."""


class PoolExhausted(BufferOpError):
    """A buffer pool has no free buffer left; free some or make the pool larger."""


class BindError(PartnerError):
    """Two partners cannot be bound as asked (both active only, or directions that do not fit)."""


class UrlError(PartnerError, ValueError):
    """A partner URL with an unknown scheme or a malformed address."""
