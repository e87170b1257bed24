"""The venues: one module per venue kind behind one interface (``base``)."""
