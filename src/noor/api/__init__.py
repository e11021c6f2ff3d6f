"""The HTTP API: Dream Machine–compatible routes over the job store."""
