"""Noor (نور): open generative video. Generate from English or Arabic prompts, serve it, plan the compute."""

__version__ = "0.1.0"
