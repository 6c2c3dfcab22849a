"""Partner: the host API of an open network offload device, after the partner architecture.

Everything that produces or consumes data is a `Partner` with the same five operations (`open`,
`close`, `push`, `pull`, `ctl`) and buffer operations (`get`, `alloc`, `free`); data moves between
partners as `Pvec`s, zero-copy vectors of chunks in the owners' buffers; `connect` binds two
partners and moves data from one to the other.

This package needs nothing beyond the Python standard library; gateware (`partner.hdl`),
simulation (`partner.sim`) and boards (`partner.boards`) come with the extras of the same names.
"""

from .binding import Binding, Port, connect
from .buffers import Buffer, BufferPool
from .errors import (
    BindError,
    BufferOpError,
    DoubleFree,
    EndOfStream,
    FlowAttributeError,
    FlowTemplateError,
    PartnerError,
    PeerLost,
    PoolExhausted,
    UnknownKey,
    UnsupportedOperation,
    UrlError,
    WouldBlock,
)
from .flow import FlowAttributes, FlowSpec, FlowTemplate
from .partner import Direction, Flow, Message, Mode, Partner
from .partners.queue import QueuePartner, TransformPartner
from .pvec import Chunk, Pvec

__version__ = "0.1.0"

__all__ = [
    "BindError",
    "Binding",
    "Buffer",
    "BufferOpError",
    "BufferPool",
    "Chunk",
    "Direction",
    "DoubleFree",
    "EndOfStream",
    "Flow",
    "FlowAttributeError",
    "FlowAttributes",
    "FlowSpec",
    "FlowTemplate",
    "FlowTemplateError",
    "Message",
    "Mode",
    "Partner",
    "PartnerError",
    "PeerLost",
    "PoolExhausted",
    "Port",
    "Pvec",
    "QueuePartner",
    "TransformPartner",
    "UnknownKey",
    "UnsupportedOperation",
    "UrlError",
    "WouldBlock",
    "__version__",
    "connect",
]
