"""Domain services: plain functions taking a SQLAlchemy ``session`` first; they never commit."""
