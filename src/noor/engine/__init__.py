"""Makes pixels: tasks and media as plain data, a backend protocol, a model registry, media encoding."""
