"""Glue between the HTTP models, the scoring core and the database."""
