"""The commands: ``desk-supervisor`` (``main``) and ``deskctl`` (with the tree walker)."""
