"""The patient twin: versioned state folded from events (pure; storage is in :mod:`pgxtwin.store`)."""
