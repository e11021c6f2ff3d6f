"""Trust: provenance (C2PA manifest + invisible watermark), moderation, idempotency, audit log."""
