"""Wire formats, submission envelopes and encryption for ODK Collect (pure library)."""
