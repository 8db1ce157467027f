"""Adapters: the only modules that talk to the network or a cloud SDK (imported lazily)."""
