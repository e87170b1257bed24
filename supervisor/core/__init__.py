"""The pure core: the desk state machine, its events, the protocol messages, errors
and the book. No I/O, no clock, no trio; it imports nothing else of the project."""
