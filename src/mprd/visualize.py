"""Ranked lists as pictures: `python -m mprd.visualize ckpt=PATH [dataset=...] num_queries=20` (Hydra).

For each of the first `num_queries` queries that have a valid match (query order), one PNG: the query, then
its gallery ranking until `top_k` items that count under the protocol are shown. Borders: green = same
identity (a true match), red = another identity, grey = excluded by the protocol (the same identity seen by
the query's own camera, or junk, pid -1), shown where it ranks but without a rank number. The title gives the
query's identity, camera and AP (the evaluation's definition, over the whole gallery). `rerank=true` draws
the re-ranked lists. Written to `<run folder>/ranked_lists/q<query index>_id<pid>.png`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, ImageDraw, ImageFont

from mprd.core.evaluation import JUNK_PID, _prepare_features, pairwise_scores
from mprd.data.datasets import load_image
from mprd.data.records import ImageRecord

log = logging.getLogger("mprd.visualize")

GREEN, RED, GREY, WHITE, BLACK = (0, 160, 0), (210, 0, 0), (150, 150, 150), (255, 255, 255), (0, 0, 0)
PANEL = (128, 64)  # height, width of each picture
BORDER, GAP, TEXT_H, TITLE_H = 4, 6, 16, 22


@dataclass
class RankedItem:
    gallery_index: int
    status: str  # 'match' | 'wrong' | 'excluded'
    rank: int | None  # 1-based rank among the items that count; None when excluded


@dataclass
class RankedList:
    query_index: int
    ap: float
    items: list[RankedItem]


def ranked_list(scores: np.ndarray, q: ImageRecord, gallery: list[ImageRecord], top_k: int) -> RankedList | None:
    """The list drawn for one query (None when it has no valid match); ties ranked by gallery index."""
    gp = np.array([g.pid for g in gallery])
    gc = np.array([g.camid for g in gallery])
    excluded = (gp == JUNK_PID) | ((gp == q.pid) & (gc == q.camid))
    match = (gp == q.pid) & ~excluded
    if not match.any():
        return None
    order = np.argsort(-scores, kind="stable")
    kept_match = match[order][~excluded[order]]
    hit_ranks = np.flatnonzero(kept_match) + 1
    ap = float(np.mean(np.arange(1, hit_ranks.size + 1) / hit_ranks))
    items, rank = [], 0
    for g in order[: 2 * top_k]:
        if excluded[g]:
            items.append(RankedItem(int(g), "excluded", None))
            continue
        rank += 1
        items.append(RankedItem(int(g), "match" if match[g] else "wrong", rank))
        if rank == top_k:
            break
    return RankedList(q.index, ap, items)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


def _panel(path: str, colour: tuple[int, int, int], label: str, font, dashed: bool = False) -> Image.Image:
    h, w = PANEL
    tile = Image.new("RGB", (w + 2 * BORDER, h + 2 * BORDER + TEXT_H), WHITE)
    tile.paste(Image.new("RGB", (w + 2 * BORDER, h + 2 * BORDER), colour), (0, 0))
    tile.paste(load_image(path).resize((w, h)), (BORDER, BORDER))
    draw = ImageDraw.Draw(tile)
    if dashed:  # excluded items: a cross over the picture
        draw.line((BORDER, BORDER, BORDER + w, BORDER + h), fill=GREY, width=2)
        draw.line((BORDER + w, BORDER, BORDER, BORDER + h), fill=GREY, width=2)
    draw.text((2, h + 2 * BORDER + 1), label, fill=BLACK, font=font)
    return tile


def render(ranked: RankedList, query: list[ImageRecord], gallery: list[ImageRecord], title_extra: str = ""
           ) -> Image.Image:
    """One row: the query (black border), then the ranked gallery items."""
    font = _font(11)
    q = query[ranked.query_index]
    tiles = [_panel(q.path, BLACK, f"query c{q.camid + 1}", font)]
    for item in ranked.items:
        g = gallery[item.gallery_index]
        if item.status == "excluded":
            why = "junk" if g.pid == JUNK_PID else "same cam"
            tiles.append(_panel(g.path, GREY, why, font, dashed=True))
        else:
            tiles.append(_panel(g.path, GREEN if item.status == "match" else RED,
                                f"#{item.rank} id{g.pid} c{g.camid + 1}", font))
    tw, th = tiles[0].size
    canvas = Image.new("RGB", (len(tiles) * tw + (len(tiles) + 1) * GAP + GAP, th + TITLE_H + GAP), WHITE)
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (GAP + i * (tw + GAP) + (GAP if i else 0), TITLE_H))
    title = (f"query {ranked.query_index}: id {q.pid}, camera {q.camid + 1}, AP {100 * ranked.ap:.1f}%{title_extra}"
             "   [green: same id, red: other id, grey x: excluded by the protocol]")
    ImageDraw.Draw(canvas).text((GAP, 4), title, fill=BLACK, font=_font(13))
    return canvas


def check_options(cfg: DictConfig) -> tuple[int, int]:
    n, k = cfg.get("num_queries"), cfg.get("top_k")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"num_queries={n!r}: expected an integer >= 1")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k={k!r}: expected an integer >= 1")
    return n, k


def visualize(cfg: DictConfig, output_dir: str | Path) -> list[tuple[Path, RankedList]]:
    """Draw the ranked lists of the module docstring; returns (file, list) per picture."""
    from mprd.eval import build_eval_datamodule, check_test_options, query_gallery_features, rerank_params
    from mprd.inference import load_model

    num_queries, top_k = check_options(cfg)
    check_test_options(cfg)
    params = rerank_params(cfg) if cfg.get("rerank") else None
    model = load_model(cfg)
    datamodule = build_eval_datamodule(cfg, model)
    data = datamodule.data
    qf, gf = query_gallery_features(cfg, model, datamodule)
    score_row = _scorer(qf, gf, cfg.test.metric, params)
    folder = Path(output_dir) / "ranked_lists"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for qi, q in enumerate(data.query):
        if len(written) == num_queries:
            break
        ranked = ranked_list(score_row(qi), q, data.gallery, top_k)
        if ranked is None:
            continue
        path = folder / f"q{qi:05d}_id{q.pid}.png"
        if path.exists():
            raise ValueError(f"{path} already exists (nothing is overwritten); choose another run folder")
        render(ranked, data.query, data.gallery, " (re-ranked)" if params else "").save(path)
        written.append((path, ranked))
    log.info("wrote %d ranked lists to %s", len(written), folder)
    return written


def _scorer(qf: torch.Tensor, gf: torch.Tensor, metric: str, params):
    """query index -> its gallery scores (higher = closer), plain or re-ranked."""
    if params is not None:
        from mprd.rerank import RerankScorer

        rr = RerankScorer(qf, gf, metric, params)
        return lambda i: rr(i, i + 1)[0].numpy()
    q, g, half = _prepare_features(qf, gf, metric)
    return lambda i: pairwise_scores(q[i : i + 1], g, half)[0].numpy()


@hydra.main(version_base="1.3", config_path="../../conf", config_name="visualize")
def main(cfg: DictConfig) -> None:
    for path, ranked in visualize(cfg, Path(cfg.paths.output_dir)):
        print(f"{path}  AP {100 * ranked.ap:.1f}")


if __name__ == "__main__":
    main()
