"""The control plane: the socket server, access control, the client and the engine gate."""
