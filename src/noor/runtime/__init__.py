"""Live execution: workers that claim jobs from the store and run them on the engine."""
