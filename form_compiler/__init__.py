"""Instrument definitions -> XLSForm -> ODK XForm with scoring built in (pure pipeline)."""
