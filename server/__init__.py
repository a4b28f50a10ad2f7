"""Kintsugi sync server (Flask app factory lives here)."""
