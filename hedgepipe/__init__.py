"""hedgepipe: a crypto-options hedging pipeline of small ZeroMQ/msgpack daemons."""

__version__ = "0.1.0"
