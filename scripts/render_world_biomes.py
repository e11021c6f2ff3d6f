"""Render docs/images/world-biomes.png: for each biome of noor-world-tiny's procedural terrain, the whole
512 px map (scaled down, the view's square outlined) above the 64 px view the model sees (scaled up 3x).

    python scripts/render_world_biomes.py [--seed N] [--out docs/images/world-biomes.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from noor.engine.world_tiny.terrain import BIOMES, VIEW_SIZE, make_map, view

PANEL_PX = 192  # side of each picture in the sheet
GAP_PX = 8
LABEL_PX = 18
NAMES = {"desert": "desert", "city_night": "city at night", "coast": "coast", "oasis": "green oasis"}


def render(seed: int) -> Image.Image:
    columns = len(BIOMES)
    width_px = columns * PANEL_PX + (columns + 1) * GAP_PX
    sheet = Image.new("RGB", (width_px, 2 * PANEL_PX + LABEL_PX + 3 * GAP_PX), "white")
    draw = ImageDraw.Draw(sheet)
    for i, biome in enumerate(BIOMES):
        terrain = make_map(biome, seed)
        # the player stands where the map's first palm, building or boat is, so the view shows a landmark
        x, y = terrain.landmarks[0].x, terrain.landmarks[0].y
        left = GAP_PX + i * (PANEL_PX + GAP_PX)
        # 1. the whole map, with the view's square (the map is a torus: this square is drawn unwrapped)
        scale = PANEL_PX / terrain.width
        whole = Image.fromarray(np.asarray(terrain.rgb)).resize((PANEL_PX, PANEL_PX), Image.Resampling.LANCZOS)
        sheet.paste(whole, (left, LABEL_PX + GAP_PX))
        x0, y0 = left + (x - VIEW_SIZE // 2) * scale, LABEL_PX + GAP_PX + (y - VIEW_SIZE // 2) * scale
        draw.rectangle([x0, y0, x0 + VIEW_SIZE * scale, y0 + VIEW_SIZE * scale], outline=(255, 40, 40), width=2)
        # 2. the view itself
        frame = Image.fromarray(view(terrain, x, y)).resize((PANEL_PX, PANEL_PX), Image.Resampling.NEAREST)
        sheet.paste(frame, (left, LABEL_PX + 2 * GAP_PX + PANEL_PX))
        draw.text((left, 4), f"{NAMES[biome]} (seed {seed})", fill=(20, 20, 20))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/images/world-biomes.png"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # 256 colours keep the sheet under 200 KB (the grain makes a true-colour PNG compress poorly)
    render(args.seed).quantize(256, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
