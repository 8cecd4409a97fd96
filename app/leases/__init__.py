"""The lease: its states and the transitions between them (pure domain)."""
