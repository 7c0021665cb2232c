"""Upstream providers behind one interface (`base.Provider`), built by `registry`."""
