"""ZeroMQ transport: wire format, endpoints, byte counters and round mailboxes.

Nothing in this package imports torch or knows about learning.
"""

from .counters import ByteCounter
from .endpoint import Endpoint, bind_address
from .mailbox import DATA_KINDS, Mailbox
from .wire import KINDS, PROTOCOL_VERSION, Limits, Message, ProtocolError, pack, unpack

__all__ = [
    "ByteCounter", "Endpoint", "bind_address", "Mailbox", "DATA_KINDS", "KINDS",
    "PROTOCOL_VERSION", "Limits", "Message", "ProtocolError", "pack", "unpack",
]
