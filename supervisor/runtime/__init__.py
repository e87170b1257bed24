"""The imperative shell: the Desk (submit events, run effects), the journal, the
kill-switch, storage, supervision and the daemon's wiring."""
