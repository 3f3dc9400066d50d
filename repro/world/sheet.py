"""contact_sheet.png: the first validation images, enlarged, with their boxes and label sets."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLUMNS, ROWS, ZOOM, CAPTION = 8, 6, 2, 28
PRIMARY, PRESENT, HIDDEN = (40, 220, 40), (255, 210, 0), (150, 150, 150)


def contact_sheet(root: Path, records: list[dict], class_names: list[str], real_min_visible: float,
                  path: Path) -> None:
    """Boxes: green the primary object, yellow other objects that count as present, grey those too hidden to."""
    records = records[:COLUMNS * ROWS]
    if not records:
        return
    size = Image.open(root / records[0]["file_name"]).width * ZOOM
    rows = -(-len(records) // COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * size, rows * (size + CAPTION)), (255, 255, 255))
    font = ImageFont.load_default(size=11)
    draw = ImageDraw.Draw(sheet)
    for i, record in enumerate(records):
        x, y = (i % COLUMNS) * size, (i // COLUMNS) * (size + CAPTION)
        tile = Image.open(root / record["file_name"]).convert("RGB").resize((size, size), Image.Resampling.NEAREST)
        sheet.paste(tile, (x, y))
        others = []
        for obj in sorted(record["objects"], key=lambda o: o["primary"]):  # the primary's box drawn last, on top
            bx, by, bw, bh = (v * ZOOM for v in obj["bbox"])
            present = obj["visible"] >= real_min_visible
            colour = PRIMARY if obj["primary"] else PRESENT if present else HIDDEN
            draw.rectangle((x + bx, y + by, x + bx + bw - 1, y + by + bh - 1), outline=colour, width=2)
            if not obj["primary"] and present:
                others.append(class_names[obj["class"]])
        draw.text((x + 3, y + size + 1), class_names[record["label"]], fill=(0, 110, 0), font=font)
        if others:
            draw.text((x + 3, y + size + 14), "+ " + ", ".join(others), fill=(140, 100, 0), font=font)
    sheet.save(path, optimize=False)
