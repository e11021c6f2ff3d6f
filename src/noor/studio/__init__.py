"""The web studio: static HTML, CSS and ES modules (no build step), in English and Arabic.

`noor serve` serves index.html at `/` and this folder at `/studio/` (see noor.api.studio).
"""

from pathlib import Path

STUDIO_DIR = Path(__file__).parent
