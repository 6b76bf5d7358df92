"""Dataset parsers: every supported re-ID dataset on disk -> `ReIDData`.

All parsers list folders with `os.scandir` and never decode an image (images are opened lazily by
`load_image`). Records keep the dataset's own pids (no relabelling); cameras are 0-based; `index` is the
position within the split, in sorted file-name order (Market layout) or list-file order (MSMT17).

Conventions, per dataset (what the files on disk look like):

* **Market-1501** (Zheng et al., ICCV 2015): `bounding_box_train/`, `query/`, `bounding_box_test/`
  (the release also holds `gt_bbox/`, `gt_query/` and `Thumbs.db` files, which are ignored).
  Names `PPPP_cCsS_FFFFFF_BB.jpg`, e.g. `0002_c1s1_000451_03.jpg`: pid 0002, camera 1 (of 6), sequence 1,
  frame 000451, box 03. The gallery holds two extra pseudo-identities: pid 0 = distractors (2,793 detector
  false alarms; kept, they are valid negatives) and pid -1 = junk (3,819 badly aligned boxes; the
  protocol ignores them). Train and query hold neither.
* **DukeMTMC-reID** (Ristani et al. 2016 / Zheng et al. 2017): same layout, names `PPPP_cC_fFFFFFFF.jpg`,
  e.g. `0001_c2_f0046182.jpg`, 8 cameras. The gallery adds 408 distractor identities (real pids).
  The dataset was withdrawn by its creators; the parser is for users who hold a copy.
* **MSMT17** (Wei et al., CVPR 2018): `train/`, `test/` (V1) or `mask_train_v2/`, `mask_test_v2/` (V2, faces
  blurred; otherwise identical), plus `list_train.txt`, `list_val.txt`, `list_query.txt`,
  `list_gallery.txt` in the root. Each list line is `<relative path> <pid>`, e.g.
  `0000/0000_000_01_0303morning_0015_0.jpg 0`; train/val paths are relative to the train folder,
  query/gallery paths to the test folder. The folder is the pid; the file name fields are
  `<pid>_<image number of this person>_<camera 01..15>_<date 0113|0114|0302|0303><morning|noon|afternoon>_
  <frame>_<box>`, so the camera is the third underscore field. Pids in the lists start at 0 in both the
  train (0..1040) and the test (0..3059) id spaces; `list_val.txt` (2,373 images) is a held-out part of
  the *same* 1,041 train identities, which is why train+val (32,621 images) is the usual unsupervised
  training set, and `list_train.txt` alone has 30,248.
* **CUHK03-NP** (Zhong et al., CVPR 2017 split of Li et al. 2014) in Market layout: names
  `PPPP_cCsS_IIIIII_00.jpg` with C = camera within the camera pair (1|2, so 2 cameras as in torchreid's
  new protocol) and S = camera pair 1..5; the Market name pattern gives pid and camera.
* **CamStyle** (Zhong et al., CVPR 2018; ECN release layout): `bounding_box_train_camstyle/` next to the
  train folder, names `<source stem>_fake_<c_src>to<c_dst>.jpg`, e.g. `0002_c1s1_000451_03_fake_1to3.jpg`.
  Each file is a style-transferred copy of one train image into another camera's style.

Decision on junk: by default (`keep_junk=False`) pid -1 is dropped everywhere, as torchreid does; with
`keep_junk=True` it stays in the gallery only, for an evaluator that removes pid -1 gallery items itself.
`PUBLISHED_STATS` follows the default, so Market's gallery is torchreid's 15,913 images / 751 ids
(750 test ids + distractor pid 0); `expected_statistics(..., keep_junk=True)` gives the raw 19,732 / 752.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from mprd.data.records import DatasetError, ImageRecord, ReIDData

__all__ = [
    "ALIASES",
    "DATASETS",
    "OFFICIAL_FOLDERS",
    "IMAGE_EXTENSIONS",
    "PUBLISHED_STATS",
    "check_statistics",
    "expected_statistics",
    "load_camstyle",
    "load_cuhk03np",
    "load_dataset",
    "load_dukemtmc",
    "load_image",
    "load_market1501",
    "load_market_layout",
    "load_msmt17",
    "load_synthetic",
    "parse_market_name",
    "resolve_root",
    "canonical_name",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MARKET_SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
CAMSTYLE_DIR = "bounding_box_train_camstyle"
JUNK_PID = -1
log = logging.getLogger(__name__)

_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
_CAMSTYLE_NAME = re.compile(r"^(?P<stem>.+)_fake_(?:(?P<src>\d+)to)?(?P<dst>\d+)$")
_MSMT_LISTS = {"train": "list_train.txt", "val": "list_val.txt", "query": "list_query.txt",
               "gallery": "list_gallery.txt"}
_MSMT_DIRS = {"v1": ("train", "test"), "v2": ("mask_train_v2", "mask_test_v2")}
_MSMT_NUM_CAMERAS = 15


# ----------------------------------------------------------------------------------------------------------
# Listing helpers
# ----------------------------------------------------------------------------------------------------------
def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_images(folder: Path) -> list[str]:
    """Sorted image file names directly in `folder` (other files, e.g. Thumbs.db, and subfolders skipped)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if _is_image(e.name) and _is_file(e))


def _is_file(entry: os.DirEntry) -> bool:
    """entry.is_file(), with a symbolic-link loop or unreadable entry raised as `DatasetError` naming it."""
    try:
        return entry.is_file()
    except OSError as err:
        raise DatasetError(f"cannot read {entry.path}: {err.strerror} (a symbolic link loop or an unreadable "
                           "entry; expected an image file)") from err


def _check_root(root: str | Path, required: Iterable[str], dataset: str, what: str) -> Path:
    """Absolute root path; raise naming every missing entry of the expected layout."""
    path = Path(os.path.abspath(os.path.expanduser(str(root))))
    if not path.is_dir():
        raise DatasetError(f"{dataset}: dataset root {path} does not exist or is not a folder (expected {what})")
    missing = [name for name in required if not (path / name).exists()]
    if missing:
        raise DatasetError(f"{dataset}: {path} lacks {', '.join(missing)} (expected {what})")
    return path


def _reindex(records: list[tuple[str, int, int]]) -> list[ImageRecord]:
    return [ImageRecord(path, pid, camid, i) for i, (path, pid, camid) in enumerate(records)]


# ----------------------------------------------------------------------------------------------------------
# Market layout (Market-1501, DukeMTMC-reID, CUHK03-NP, synthetic)
# ----------------------------------------------------------------------------------------------------------
def parse_market_name(name: str) -> tuple[int, int] | None:
    """(pid, 1-based camera) from a Market-layout file name, or None when it does not match."""
    m = _MARKET_NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _is_camstyle_name(name: str) -> bool:
    return _CAMSTYLE_NAME.match(os.path.splitext(name)[0]) is not None


def _market_split(folder: Path, dataset: str, keep_junk: bool, num_cameras: int | None,
                  skip_camstyle: bool = False) -> list[ImageRecord]:
    names = _list_images(folder)
    if skip_camstyle:  # CamStyle copies mixed into the train folder (ECN / MLCR MSMT17 release) are not train images
        names = [n for n in names if not _is_camstyle_name(n)]
    if not names:
        raise DatasetError(f"{dataset}: split folder {folder} holds no images (expected {'/'.join(IMAGE_EXTENSIONS)})")
    records: list[tuple[str, int, int]] = []
    for name in names:
        parsed = parse_market_name(name)
        if parsed is None:
            raise DatasetError(f"{dataset}: cannot parse file name {folder / name} (expected '<pid>_c<camera>...',"
                               " e.g. 0002_c1s1_000451_03.jpg)")
        pid, cam = parsed
        if pid < JUNK_PID or cam < 1 or (num_cameras is not None and cam > num_cameras):
            raise DatasetError(f"{dataset}: {folder / name} has pid {pid} / camera {cam} (expected pid >= -1 and "
                               f"camera in 1..{num_cameras or 'n'})")
        if pid == JUNK_PID and not keep_junk:
            continue
        records.append((str(folder / name), pid, cam - 1))
    if not records:
        raise DatasetError(f"{dataset}: split folder {folder} holds only junk (pid -1) images (expected real ids)")
    return _reindex(records)


def load_market_layout(
    root: str | Path,
    name: str = "market1501",
    *,
    keep_junk: bool = False,
    camstyle: bool = True,
    num_cameras: int | None = 6,
) -> ReIDData:
    """Parse a Market-1501-layout folder (`bounding_box_train/`, `query/`, `bounding_box_test/`).

    `keep_junk`: keep pid -1 in the gallery (never in train/query). `camstyle`: load
    `bounding_box_train_camstyle/` when present. `num_cameras`: largest valid camera number (None: any).
    """
    what = "folders " + ", ".join(MARKET_SPLITS.values())
    path = _check_root(root, MARKET_SPLITS.values(), name, what)
    train_dir = path / MARKET_SPLITS["train"]
    train = _market_split(train_dir, name, False, num_cameras, skip_camstyle=True)
    query = _market_split(path / MARKET_SPLITS["query"], name, False, num_cameras)
    gallery = _market_split(path / MARKET_SPLITS["gallery"], name, keep_junk, num_cameras)
    styles: dict[int, list[str]] = {}
    if camstyle:
        mixed = [n for n in _list_images(train_dir) if _is_camstyle_name(n)]
        styles = load_camstyle(train_dir, train, dataset=name, names=mixed) if mixed else {}
        if (path / CAMSTYLE_DIR).is_dir():
            extra = load_camstyle(path / CAMSTYLE_DIR, train, dataset=name)
            styles = {i: sorted(styles.get(i, []) + extra[i]) for i in extra}
    return ReIDData(name=name, root=str(path), train=train, query=query, gallery=gallery, camstyle=styles)


def load_market1501(root: str | Path, *, keep_junk: bool = False, camstyle: bool = True) -> ReIDData:
    """Market-1501: 6 cameras."""
    return load_market_layout(root, "market1501", keep_junk=keep_junk, camstyle=camstyle, num_cameras=6)


def load_dukemtmc(root: str | Path, *, keep_junk: bool = False, camstyle: bool = True) -> ReIDData:
    """DukeMTMC-reID (withdrawn by its creators; for users who hold a copy): 8 cameras."""
    return load_market_layout(root, "dukemtmc", keep_junk=keep_junk, camstyle=camstyle, num_cameras=8)


def load_cuhk03np(root: str | Path, *, keep_junk: bool = False, camstyle: bool = True) -> ReIDData:
    """CUHK03-NP in Market layout: camera 1|2 within each camera pair, so 2 cameras."""
    return load_market_layout(root, "cuhk03np", keep_junk=keep_junk, camstyle=camstyle, num_cameras=2)


def load_synthetic(root: str | Path, *, keep_junk: bool = False, camstyle: bool = True) -> ReIDData:
    """The synthetic benchmark, written in Market layout; any camera count."""
    return load_market_layout(root, "synthetic", keep_junk=keep_junk, camstyle=camstyle, num_cameras=None)


# ----------------------------------------------------------------------------------------------------------
# CamStyle
# ----------------------------------------------------------------------------------------------------------
def load_camstyle(
    folder: str | Path,
    train: list[ImageRecord],
    *,
    dataset: str = "camstyle",
    ignore_stems: frozenset[str] = frozenset(),
    names: list[str] | None = None,
) -> dict[int, list[str]]:
    """Map every `<stem>_fake_<a>to<b>` (or `<stem>_fake_<b>`) file in `folder` to its source train image index.

    Returns one (possibly empty) sorted path list per train index. Sources in `ignore_stems` are
    skipped (images deliberately left out of train); any other unknown source is an error. `names`: only
    these files of `folder` (default: every image in it).
    """
    folder = Path(folder)
    by_stem: dict[str, int] = {}
    for rec in train:
        stem = os.path.splitext(os.path.basename(rec.path))[0]
        if stem in by_stem:
            raise DatasetError(f"{dataset}: two train images share the stem '{stem}' ({train[by_stem[stem]].path}, "
                               f"{rec.path}); CamStyle files cannot be matched to a unique source")
        by_stem[stem] = rec.index
    styles: dict[int, list[str]] = {rec.index: [] for rec in train}
    for name in _list_images(folder) if names is None else names:
        m = _CAMSTYLE_NAME.match(os.path.splitext(name)[0])
        if m is None:
            raise DatasetError(f"{dataset}: cannot parse CamStyle file name {folder / name} "
                               "(expected '<source stem>_fake_<c1>to<c2>.jpg' or '<source stem>_fake_<c2>.jpg')")
        stem = m.group("stem")
        if stem in ignore_stems:
            continue
        if stem not in by_stem:
            raise DatasetError(f"{dataset}: CamStyle file {folder / name} has no source image '{stem}' in the "
                               "train split (expected every CamStyle file to render a train image)")
        index = by_stem[stem]
        if m.group("src") is not None and int(m.group("src")) != train[index].camid + 1:
            raise DatasetError(f"{dataset}: CamStyle file {folder / name} says source camera {m.group('src')} but "
                               f"{train[index].path} is camera {train[index].camid + 1}")
        styles[index].append(str(folder / name))
    return styles


# ----------------------------------------------------------------------------------------------------------
# MSMT17
# ----------------------------------------------------------------------------------------------------------
def _msmt_version(root: Path, version: str) -> str:
    if version not in ("auto", "v1", "v2", "market"):
        raise DatasetError(f"msmt17: version={version!r} (expected 'auto', 'v1', 'v2' or 'market')")
    if version != "auto":
        return version
    found = [v for v, dirs in _MSMT_DIRS.items() if all((root / d).is_dir() for d in dirs)]
    if not found and _has_market_layout(root):
        return "market"
    if len(found) == 1:
        return found[0]
    if not found:
        raise DatasetError(f"msmt17: {root} holds neither train/ + test/ (V1), mask_train_v2/ + mask_test_v2/ "
                           "(V2) nor bounding_box_train/ + query/ + bounding_box_test/ (Market-style)")
    raise DatasetError(f"msmt17: {root} holds both V1 and V2 folders; set version='v1' or 'v2'")


def _has_market_layout(root: Path) -> bool:
    return all((root / d).is_dir() for d in MARKET_SPLITS.values())


def _files_under(folder: Path) -> set[str]:
    """Relative paths '<pid folder>/<file>' of every image one level below `folder`."""
    found: set[str] = set()
    with os.scandir(folder) as entries:
        for sub in entries:
            if _is_dir(sub):
                found.update(f"{sub.name}/{n}" for n in _list_images(Path(sub.path)))
            elif _is_image(sub.name):
                found.add(sub.name)
    return found


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError as err:
        raise DatasetError(f"cannot read {entry.path}: {err.strerror} (a symbolic link loop or an unreadable "
                           "entry; expected a folder of images)") from err


def _msmt_list(list_path: Path, image_dir: Path, existing: set[str]) -> list[tuple[str, int, int]]:
    """(path, pid, camid) per line of one MSMT17 list file, in file order."""
    records: list[tuple[str, int, int]] = []
    with open(list_path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"msmt17: {list_path} line {lineno} ({line.strip()!r})"
        if len(fields) != 2 or not fields[1].isdigit():
            raise DatasetError(f"{where}: expected '<relative path> <pid>'")
        rel, pid = fields[0], int(fields[1])
        parts = os.path.basename(rel).split("_")
        if len(parts) < 3 or not parts[2].isdigit() or not 1 <= int(parts[2]) <= _MSMT_NUM_CAMERAS:
            raise DatasetError(f"{where}: cannot read the camera (expected the third '_' field of the file name "
                               f"to be 01..{_MSMT_NUM_CAMERAS}, e.g. 0000_000_01_0303morning_0015_0.jpg)")
        if rel not in existing:
            raise DatasetError(f"{where}: image {image_dir / rel} does not exist")
        records.append((str(image_dir / rel), pid, int(parts[2]) - 1))
    if not records:
        raise DatasetError(f"msmt17: list file {list_path} has no entries (expected '<relative path> <pid>' lines)")
    return records


def load_msmt17(
    root: str | Path, *, version: str = "auto", combine_train_val: bool = True, camstyle: bool = True
) -> ReIDData:
    """MSMT17 V1/V2 from its list files. Train = list_train (+ list_val when `combine_train_val`).

    `camstyle`: load `bounding_box_train_camstyle/` (flat, `<train stem>_fake_<a>to<b>.jpg`) when present;
    renders of list_val images are skipped when val is not part of train.
    `version='market'` (or auto-detected): the Market-style copy that ECN and MLCR's release use
    (`bounding_box_train/`, `query/`, `bounding_box_test/`, names `<pid>_c<cam>_...`, 15 cameras; CamStyle
    copies `<stem>_fake_<cam>.jpg` in `bounding_box_train_camstyle/` or mixed into `bounding_box_train/`).
    Its train split is whatever `bounding_box_train/` holds, so `combine_train_val` does not apply there.
    """
    path = _check_root(root, [], "msmt17", "an MSMT17_V1 or MSMT17_V2 folder")
    version = _msmt_version(path, version)
    if version == "market":
        return load_market_layout(path, "msmt17", camstyle=camstyle, num_cameras=_MSMT_NUM_CAMERAS)
    train_dir, test_dir = (path / d for d in _MSMT_DIRS[version])
    lists = ", ".join(_MSMT_LISTS.values())
    expected = f"MSMT17 {version.upper()} layout: {train_dir.name}/, {test_dir.name}/, {lists}"
    _check_root(path, [train_dir.name, test_dir.name, *_MSMT_LISTS.values()], "msmt17", expected)
    train_files, test_files = _files_under(train_dir), _files_under(test_dir)
    train = _msmt_list(path / _MSMT_LISTS["train"], train_dir, train_files)
    val = _msmt_list(path / _MSMT_LISTS["val"], train_dir, train_files)
    query = _msmt_list(path / _MSMT_LISTS["query"], test_dir, test_files)
    gallery = _msmt_list(path / _MSMT_LISTS["gallery"], test_dir, test_files)
    train_records = _reindex(train + val if combine_train_val else train)
    styles: dict[int, list[str]] = {}
    if camstyle and (path / CAMSTYLE_DIR).is_dir():
        skipped = frozenset() if combine_train_val else frozenset(
            os.path.splitext(os.path.basename(p))[0] for p, _, _ in val)
        styles = load_camstyle(path / CAMSTYLE_DIR, train_records, dataset="msmt17", ignore_stems=skipped)
    return ReIDData(name="msmt17", root=str(path), train=train_records, query=_reindex(query),
                    gallery=_reindex(gallery), camstyle=styles)


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------
DATASETS: dict[str, Callable[..., ReIDData]] = {
    "market1501": load_market1501,
    "dukemtmc": load_dukemtmc,
    "msmt17": load_msmt17,
    "cuhk03np": load_cuhk03np,
    "synthetic": load_synthetic,
}

_OPTIONS = {
    "market1501": {"keep_junk", "camstyle"},
    "dukemtmc": {"keep_junk", "camstyle"},
    "cuhk03np": {"keep_junk", "camstyle"},
    "synthetic": {"keep_junk", "camstyle"},
    "msmt17": {"version", "combine_train_val", "camstyle"},
}


# Names other codebases use (torchreid, fast-reid, cluster-contrast, SpCL, MLCR's release) -> ours.
ALIASES: dict[str, str] = {
    "market": "market1501", "market-1501": "market1501",
    "dukemtmcreid": "dukemtmc", "dukemtmc-reid": "dukemtmc", "duke": "dukemtmc",
    "msmt": "msmt17", "msmt17_v1": "msmt17", "msmt17_v2": "msmt17",
    "cuhk03-np": "cuhk03np", "cuhk03_np": "cuhk03np",
}

# The official folder a root may hold, as torchreid and cluster-contrast lay them out (`<root>/market1501/
# Market-1501-v15.09.15`, ...): `dataset.root` may point at any folder above the splits along these paths.
OFFICIAL_FOLDERS: dict[str, tuple[str, ...]] = {
    "market1501": ("Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501", "Market-1501"),
    "dukemtmc": ("DukeMTMC-reID", "dukemtmcreid/DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID",
                 "dukemtmc/DukeMTMC-reID", "dukemtmcreid", "dukemtmc"),
    "msmt17": ("MSMT17_V1", "MSMT17_V2", "msmt17/MSMT17_V1", "msmt17/MSMT17_V2", "MSMT17", "msmt17"),
    "cuhk03np": ("detected", "cuhk03-np/detected", "cuhk03_np/detected", "cuhk03np/detected", "cuhk03np"),
}


def canonical_name(name: str) -> str:
    """Our dataset key for `name` or one of its `ALIASES` (case-insensitive)."""
    key = str(name).lower()
    return ALIASES.get(key, key)


def _has_layout(name: str, folder: Path) -> bool:
    if name == "msmt17":
        return _has_market_layout(folder) or any(all((folder / d).is_dir() for d in dirs)
                                                 for dirs in _MSMT_DIRS.values())
    return _has_market_layout(folder)


def resolve_root(name: str, root: str | Path) -> Path:
    """The folder holding the splits: `root` itself, or the official folder inside it (logged).

    A root without the layout and without a known official folder is returned as is: the parser then names
    what is missing. Two different official folders inside one root (e.g. MSMT17_V1/ and MSMT17_V2/) raise.
    """
    name = canonical_name(name)
    path = Path(os.path.abspath(os.path.expanduser(str(root))))
    if not path.is_dir() or _has_layout(name, path):
        return path
    hits = [path / sub for sub in OFFICIAL_FOLDERS.get(name, ()) if _has_layout(name, path / sub)]
    distinct = list(dict.fromkeys(h.resolve() for h in hits))
    if len(distinct) > 1:
        raise DatasetError(f"{name}: dataset.root {path} holds {len(distinct)} copies ({', '.join(map(str, hits))});"
                           " set dataset.root to the one to use")
    if hits:
        log.info("%s: dataset.root %s holds the official folder %s; reading the splits from it",
                 name, path, hits[0].relative_to(path))
        return hits[0]
    return path


def load_dataset(name: str, root: str | Path, **options: Any) -> ReIDData:
    """Parse dataset `name` (one of `DATASETS` or `ALIASES`) under `root` (or its official folder, see
    `resolve_root`), with its parser's keyword options."""
    name = canonical_name(name)
    if name not in DATASETS:
        from mprd.data.video_datasets import is_video_dataset

        if is_video_dataset(name):
            raise DatasetError(f"{name!r} is a video dataset: read it with "
                               "mprd.data.video_datasets.load_video_dataset (tracklets, not images)")
        raise DatasetError(f"unknown dataset {name!r} (expected one of {', '.join(sorted(DATASETS))} or an alias: "
                           f"{', '.join(sorted(ALIASES))})")
    root = resolve_root(name, root)
    unknown = sorted(set(options) - _OPTIONS[name])
    if unknown:
        raise DatasetError(f"{name}: unknown option(s) {', '.join(unknown)} "
                           f"(expected a subset of {', '.join(sorted(_OPTIONS[name]))})")
    return DATASETS[name](root, **options)


# ----------------------------------------------------------------------------------------------------------
# Published statistics
# ----------------------------------------------------------------------------------------------------------
# Numbers as each dataset's parser returns them with default options ("ids" counts distinct pids, so
# Market's gallery counts distractor pid 0). Sources: the dataset papers, torchreid's printed summaries,
# person-re-ranking's CUHK03-NP README. Cameras are listed only where every split is known to cover all.
PUBLISHED_STATS: dict[str, dict[str, dict[str, int]]] = {
    "market1501": {
        "train": {"images": 12936, "ids": 751, "cameras": 6},
        "query": {"images": 3368, "ids": 750, "cameras": 6},
        "gallery": {"images": 15913, "ids": 751, "cameras": 6},  # 19,732 - 3,819 junk; 750 ids + pid 0
    },
    "dukemtmc": {
        "train": {"images": 16522, "ids": 702, "cameras": 8},
        "query": {"images": 2228, "ids": 702, "cameras": 8},
        "gallery": {"images": 17661, "ids": 1110, "cameras": 8},  # 702 test ids + 408 distractor ids
    },
    "msmt17": {
        "train": {"images": 32621, "ids": 1041},  # list_train + list_val
        "query": {"images": 11659, "ids": 3060},
        "gallery": {"images": 82161, "ids": 3060},
    },
    "cuhk03np": {  # the 'detected' boxes
        "train": {"images": 7365, "ids": 767, "cameras": 2},
        "query": {"images": 1400, "ids": 700, "cameras": 2},
        "gallery": {"images": 5332, "ids": 700, "cameras": 2},
    },
}
MARKET_JUNK_IMAGES = 3819
MSMT17_VAL_IMAGES = 2373


def expected_statistics(name: str, **options: Any) -> dict[str, dict[str, int]]:
    """Published numbers matching `load_dataset(name, ..., **options)`; {} when none are known (synthetic)."""
    name = canonical_name(name)
    if name not in PUBLISHED_STATS:
        return {}
    stats = {split: dict(values) for split, values in PUBLISHED_STATS[name].items()}
    if name == "market1501" and options.get("keep_junk", False):
        stats["gallery"].update(images=stats["gallery"]["images"] + MARKET_JUNK_IMAGES, ids=752)
    if name == "msmt17" and not options.get("combine_train_val", True):
        stats["train"]["images"] -= MSMT17_VAL_IMAGES  # 30,248; val uses the same 1,041 ids
    return stats


def check_statistics(data: ReIDData, expected: Mapping[str, Mapping[str, int]]) -> list[str]:
    """One message per statistic of `data` that differs from `expected` (only the keys given are compared)."""
    actual = data.statistics()
    problems = []
    for split, values in expected.items():
        for key, want in values.items():
            got = actual.get(split, {}).get(key)
            if got != want:
                problems.append(f"{data.name} {split} {key}: found {got:,} under {data.root}, published {want:,}"
                                if got is not None else f"{data.name}: no statistic {split}/{key}")
    return problems


# ----------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------
def load_image(path: str | Path) -> Image.Image:
    """Decode one image fully as RGB; unreadable, truncated or corrupt files raise `DatasetError`."""
    try:
        with Image.open(path) as img:
            img.load()  # force the decode here so truncation is caught now, not inside a transform
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot read image {path}: {err} (expected a readable JPEG/PNG file)") from err


# ----------------------------------------------------------------------------------------------------------
# Image audit (start-up warnings)
# ----------------------------------------------------------------------------------------------------------
def audit_images(data: ReIDData, min_side: int = 8, show: int = 5) -> list[str]:
    """One message per kind of suspicious image in train/query/gallery, naming up to `show` files:
    images with a side under `min_side` pixels (read from the header, nothing decoded) and byte-identical
    files (only files of equal size are hashed). An unreadable header is left to `load_image` to report."""
    import hashlib

    paths = [r.path for split in (data.train, data.query, data.gallery) for r in split]
    tiny = []
    for path in paths:
        try:
            with Image.open(path) as img:
                if min(img.size) < min_side:
                    tiny.append(f"{path} ({img.size[0]}x{img.size[1]})")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue
    by_size: dict[int, list[str]] = {}
    for path in paths:
        by_size.setdefault(os.path.getsize(path), []).append(path)
    groups: dict[str, list[str]] = {}
    for same_size in (g for g in by_size.values() if len(g) > 1):
        for path in same_size:
            with open(path, "rb") as f:
                groups.setdefault(hashlib.blake2b(f.read(), digest_size=16).hexdigest(), []).append(path)
    duplicates = [g for g in groups.values() if len(g) > 1]
    messages = []
    if tiny:
        messages.append(f"{data.name}: {len(tiny)} image(s) smaller than {min_side}px on a side under {data.root}, "
                        f"e.g. {', '.join(tiny[:show])}")
    if duplicates:
        examples = "; ".join(" = ".join(g) for g in duplicates[:show])
        messages.append(f"{data.name}: {len(duplicates)} group(s) of byte-identical images "
                        f"({sum(map(len, duplicates))} files) under {data.root}, e.g. {examples}")
    return messages
