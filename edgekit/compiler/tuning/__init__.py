"""`edgekit tune`: db.py (the database: format, load, save) and search.py (timing knob settings per task)."""
