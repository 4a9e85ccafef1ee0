"""p2pfl: a peer-to-peer gossip learning runtime over ZeroMQ."""

__version__ = "0.1.0"
