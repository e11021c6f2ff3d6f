"""Durable jobs: the Generation record and its state machine, the Store (SQLAlchemy) and assets."""
