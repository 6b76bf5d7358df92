"""Contact sheet: a PNG of a few identities across cameras (and real crops beside them) to inspect a set."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from mprd.data.records import DatasetError
from mprd.data.synthetic.build import read_info
from mprd.data.synthetic.config import IMAGE_H, IMAGE_W, MARKET_NAME_RE


def _label(img: Image.Image, xy: tuple[int, int], text: str, fill=(20, 20, 20)) -> None:
    ImageDraw.Draw(img).text(xy, text, fill=fill)


def contact_sheet(folder: str | Path, out_png: str | Path, n_ids: int = 5, real_dir: str | Path | None = None,
                  scale: int = 2) -> Path:
    """A PNG of a generated copy: a few train ids in every camera, one image with its CamStyle copies,
    distractors and junk, and (optionally) a row of real crops from `real_dir` for comparison."""
    folder = Path(folder)
    info = read_info(folder)
    if info is None:
        raise DatasetError(f"{folder} has no readable synthetic.json; expected a folder made by ensure_synthetic")
    n_cams = int(info["config"]["num_cameras"])
    train = sorted((folder / "bounding_box_train").glob("*.jpg"))
    by_id: dict[int, dict[int, Path]] = {}
    for p in train:
        m = MARKET_NAME_RE.search(p.name)
        by_id.setdefault(int(m.group(1)), {}).setdefault(int(m.group(2)), p)
    ids = sorted(by_id, key=lambda i: (-len(by_id[i]), i))[:n_ids]
    rows: list[tuple[str, list[Path | None]]] = [
        (f"id {i}", [by_id[i].get(c) for c in range(1, n_cams + 1)]) for i in ids
    ]
    first = by_id[ids[0]]
    src = next(iter(first.values()))
    cs = sorted((folder / "bounding_box_train_camstyle").glob(src.stem + "_fake_*.jpg"))
    style_row: list[Path | None] = [None] * n_cams
    style_row[int(MARKET_NAME_RE.search(src.name).group(2)) - 1] = src
    for p in cs:
        style_row[int(p.stem.rsplit("to", 1)[1]) - 1] = p
    rows.append(("CamStyle", style_row))
    gallery = sorted((folder / "bounding_box_test").glob("*.jpg"))
    for name, prefix in (("distractor 0", "0000_"), ("junk -1", "-1_")):
        found = [p for p in gallery if p.name.startswith(prefix)]
        rows.append((name, found[:: max(1, len(found) // n_cams)][:n_cams]))
    if real_dir is not None:
        real = sorted(Path(real_dir).glob("*.jpg"))
        rows.append(("real", real[:: max(1, len(real) // n_cams)][:n_cams]))
    lw, pad, head = 84, 4, 16
    cell_w, cell_h = IMAGE_W * scale, IMAGE_H * scale
    sheet = Image.new("RGB", (lw + n_cams * (cell_w + pad), head + len(rows) * (cell_h + pad)), (245, 245, 245))
    for c in range(n_cams):
        _label(sheet, (lw + c * (cell_w + pad) + cell_w // 2 - 8, 3), f"c{c + 1}")
    for r, (name, cells) in enumerate(rows):
        y = head + r * (cell_h + pad)
        _label(sheet, (4, y + cell_h // 2 - 6), name)
        for c, p in enumerate(cells[:n_cams]):
            if p is not None:
                im = Image.open(p).convert("RGB").resize((cell_w, cell_h), Image.NEAREST)
                sheet.paste(im, (lw + c * (cell_w + pad), y))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256).save(out_png, optimize=True)  # a 256-colour palette halves the PNG (noise compresses badly)
    return out_png
