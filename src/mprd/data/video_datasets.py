"""Video re-ID dataset parsers: MARS, DukeMTMC-VideoReID, PRID2011, iLIDS-VID -> `VideoReIDData`.

Same conventions as the image parsers (`mprd.data.datasets`): folders are only listed (no frame is decoded),
pids are the dataset's own (not relabelled), cameras are 0-based, a tracklet's `index` is its position in its
split, and every layout problem raises one `DatasetError` naming the path and what was expected. A tracklet's
frames are in file-name order (= temporal order in every release below).

Conventions, per dataset:

* **MARS** (Zheng et al., ECCV 2016): `bbox_train/`, `bbox_test/` hold the frames under `<pid>/` folders,
  named `<pid>C<camera>T<tracklet>F<frame>.jpg`, e.g. `0001C1T0001F001.jpg` (pid `0000` = distractors,
  `00-1` = junk; camera 1..6). `info/` holds `train_name.txt` / `test_name.txt` (every frame name, one a
  line), `tracks_train_info.mat` / `tracks_test_info.mat` (one row per tracklet: [start, end, pid, camera],
  start/end 1-based inclusive indices into the name list) and `query_IDX.mat` (1-based indices of the query
  rows of the test tracks; the gallery is every other test track, as torchreid does). Published: train 625
  ids / 8,298 tracklets, query 1,980 and gallery 9,330 tracklets, 6 cameras (20,478 tracklets in all,
  1,191,003 frames). The name list is parsed once, vectorised (numpy on the fixed-width name prefix); the
  tracklets are numpy slices of it.
* **DukeMTMC-VideoReID** (Wu et al., CVPR 2018): `train/`, `query/`, `gallery/`, each `<pid>/<tracklet>/`
  folders of frames named `<pid>_C<camera>_F<frame>_X<...>.jpg`, e.g. `0001_C6_F0001_X30601.jpg`
  (camera 1..8, read from the frame name). Published (SSLR §4.1): train 702 ids / 2,196 tracklets; test
  2,636 tracklets of another 702 ids. The DukeMTMC source was withdrawn by its creators; the parser is for
  users who hold a copy.
* **PRID2011** (Hirzer et al., SCIA 2011): `multi_shot/cam_a/person_XXXX/*.png` (385 persons) and
  `multi_shot/cam_b/person_XXXX/*.png` (749 persons); the 200 persons in both cameras are used.
* **iLIDS-VID** (Wang et al., ECCV 2014): `sequences/cam1/personXXX/*.png`, `sequences/cam2/personXXX/*.png`,
  300 persons, each in both cameras.

Protocol decisions (docs/datasets.md, "Video datasets"):

* MARS junk (pid -1) follows the image parsers: dropped everywhere by default (`keep_junk=False`, torchreid's
  behaviour, hence its 9,330 gallery tracklets); `keep_junk=True` keeps it in the gallery only (10,200
  tracklets), where `core.evaluation` removes pid -1 for every query, so the metrics are the same.
  Distractors (pid 0) stay in the gallery: no query has pid 0, so they are valid negatives.
* `min_seq_len` on MARS / DukeMTMC-VideoReID drops *train* tracklets shorter than it; query and gallery are
  never filtered (the evaluation protocol stays the published one). On PRID2011 / iLIDS-VID it selects the
  *persons* (both tracklets at least that long) before the identity splits are drawn: DVR's "sequence pairs
  with more than 21 frames" (min_seq_len=22) gives the 178 PRID2011 persons of UGA's Table 1.
* PRID2011 / iLIDS-VID: 10 random 50/50 identity splits, seeded, written once to a split file (default
  `splits_<name>.json` in the dataset root) and read back on later runs, never overwritten; torchreid's
  split files (a JSON list of {"train": [...], "test": [...]} person folders) are read as they are.
  Train = both cameras' tracklets of the training persons; query (probe) = first camera (cam_a / cam1),
  gallery = second camera (cam_b / cam2) of the test persons.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mprd.data.datasets import IMAGE_EXTENSIONS, JUNK_PID, _check_root, _is_dir, _list_images
from mprd.data.records import DatasetError, TrackletRecord, VideoReIDData

__all__ = [
    "NUM_SPLITS",
    "VIDEO_ALIASES",
    "VIDEO_DATASETS",
    "VIDEO_OFFICIAL_FOLDERS",
    "VIDEO_PUBLISHED_STATS",
    "canonical_video_name",
    "expected_video_statistics",
    "is_video_dataset",
    "load_dukemtmc_videoreid",
    "load_ilidsvid",
    "load_mars",
    "load_mars_layout",
    "load_prid2011",
    "load_synthetic_video",
    "load_video_dataset",
    "make_identity_splits",
    "resolve_video_root",
]

log = logging.getLogger(__name__)

NUM_SPLITS = 10  # PRID2011 / iLIDS-VID: the usual 10 random 50/50 identity splits
MARS_INFO = ("train_name.txt", "test_name.txt", "tracks_train_info.mat", "tracks_test_info.mat", "query_IDX.mat")
_MARS_MAT_KEYS = {"tracks_train_info.mat": "track_train_info", "tracks_test_info.mat": "track_test_info",
                  "query_IDX.mat": "query_IDX"}
_MARS_NAME = r"(?:\d{4}|00-1)C\dT\d{4}F\d+\.(?:jpg|jpeg|png)"
_MARS_NAME_RE = re.compile(_MARS_NAME)
_MARS_NAMES_RE = re.compile(f"(?:{_MARS_NAME}\n)*")
_MARS_EXAMPLE = "'<pid>C<camera>T<tracklet>F<frame>.jpg', e.g. 0001C1T0001F001.jpg (pid 00-1 = junk)"
DUKE_VIDEO_SPLITS = ("train", "query", "gallery")
_DUKE_VIDEO_NAME_RE = re.compile(r"^(\d+)_C(\d+)_F\d+")
_DUKE_VIDEO_NAMES_RE = re.compile(r"(?:\d+_C\d+_F\d+[^\n]*\n)*")
_DUKE_VIDEO_EXAMPLE = "'<pid>_C<camera>_F<frame>_X<...>.jpg', e.g. 0001_C6_F0001_X30601.jpg"


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------
def _sorted_dirs(folder: Path) -> list[str]:
    """Sorted names of the (non-hidden) subfolders of `folder`."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and _is_dir(e))


def _records(rows: Sequence[tuple[tuple[str, ...], int, int, int]]) -> list[TrackletRecord]:
    """(paths, pid, camid, tracklet) rows -> records indexed by position."""
    return [TrackletRecord(paths, pid, camid, i, tracklet) for i, (paths, pid, camid, tracklet) in enumerate(rows)]


def _nonempty(records: list[TrackletRecord], dataset: str, where: Path | str, split: str) -> list[TrackletRecord]:
    if not records:
        raise DatasetError(f"{dataset}: the {split} split of {where} holds no tracklets (expected at least one)")
    return records


# ----------------------------------------------------------------------------------------------------------
# MARS
# ----------------------------------------------------------------------------------------------------------
def _read_mars_names(path: Path, dataset: str) -> list[str]:
    """Frame names of a MARS name list, each checked against the MARS pattern (one regex pass over the file)."""
    names = path.read_text().split()
    if not names:
        raise DatasetError(f"{dataset}: name list {path} is empty (expected one frame name a line, {_MARS_EXAMPLE})")
    if _MARS_NAMES_RE.fullmatch("\n".join(names) + "\n") is None:
        bad = next(i for i, n in enumerate(names) if _MARS_NAME_RE.fullmatch(n) is None)
        raise DatasetError(f"{dataset}: cannot parse frame name {names[bad]!r} (entry {bad + 1} of {path}; "
                           f"expected {_MARS_EXAMPLE})")
    return names


def _mars_fields(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pid, 1-based camera, tracklet) per frame name (a numpy str array), from the fixed prefix `PPPPCcTtttt`."""
    codes = arr.view(np.uint32).reshape(len(arr), -1)[:, :11].astype(np.int64)
    digits = codes - ord("0")
    pid = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    pid[codes[:, 2] == ord("-")] = JUNK_PID
    tracklet = digits[:, 7] * 1000 + digits[:, 8] * 100 + digits[:, 9] * 10 + digits[:, 10]
    return pid, digits[:, 5], tracklet


def _load_mat(path: Path, key: str, dataset: str) -> np.ndarray:
    """The integer matrix `key` of a .mat file (or its only variable when `key` is absent)."""
    from scipy.io import loadmat

    try:
        content = loadmat(str(path))
    except Exception as err:  # scipy raises ValueError, TypeError, OSError, ... on a bad file
        raise DatasetError(f"{dataset}: cannot read {path}: {err} (expected a MATLAB .mat file)") from err
    variables = {k: v for k, v in content.items() if not k.startswith("__")}
    if key not in variables and len(variables) != 1:
        found = ", ".join(sorted(variables)) or "none"
        raise DatasetError(f"{dataset}: {path} has no variable '{key}' (found {found})")
    value = np.asarray(variables.get(key, next(iter(variables.values()))))
    if not np.issubdtype(value.dtype, np.number):
        raise DatasetError(f"{dataset}: {path} variable '{key}' is not numeric (expected integers)")
    return value.astype(np.int64)


def _check_mars_rows(info: np.ndarray, num_names: int, mat_path: Path, list_path: Path, dataset: str,
                     num_cameras: int | None) -> None:
    """Every row [start, end, pid, camera] must be a non-empty range within the name list, with valid ids."""
    if info.ndim != 2 or info.shape[1] < 4 or info.shape[0] == 0:
        raise DatasetError(f"{dataset}: {mat_path} holds a {'x'.join(map(str, info.shape))} matrix (expected one "
                           "row [start, end, pid, camera] per tracklet)")
    start, end, pid, cam = info[:, 0], info[:, 1], info[:, 2], info[:, 3]
    checks = [
        ((start < 1) | (end > num_names), f"points past the {num_names:,} frame names of {list_path} (expected "
                                          f"1-based inclusive [start, end] within 1..{num_names})"),
        (end < start, "is an empty tracklet (expected start <= end)"),
        ((pid < JUNK_PID) | (cam < 1) | (cam > (num_cameras or 9)),
         f"has an invalid pid or camera (expected pid >= -1 and camera in 1..{num_cameras or 9})"),
    ]
    for bad, what in checks:
        rows = np.flatnonzero(bad)
        if rows.size:
            raise DatasetError(f"{dataset}: {mat_path} row {rows[0] + 1} {info[rows[0], :4].tolist()} {what}")


def _mars_tracks(names: list[str], info: np.ndarray, folder: Path, mat_path: Path, list_path: Path,
                 dataset: str, num_cameras: int | None) -> list[tuple[tuple[str, ...], int, int, int]]:
    """(paths, pid, camid, tracklet) per row of `info`; every frame must carry its row's pid and camera."""
    _check_mars_rows(info, len(names), mat_path, list_path, dataset, num_cameras)
    arr = np.asarray(names)
    fpid, fcam, ftrk = _mars_fields(arr)
    start, end = info[:, 0] - 1, info[:, 1]
    lengths = end - start
    row = np.repeat(np.arange(len(info)), lengths)
    frame = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(start, lengths)
    wrong = (fpid[frame] != info[row, 2]) | (fcam[frame] != info[row, 3]) | (ftrk[frame] != ftrk[start[row]])
    if wrong.any():
        k = int(np.flatnonzero(wrong)[0])
        raise DatasetError(f"{dataset}: {mat_path} row {row[k] + 1} {info[row[k], :4].tolist()} covers frame "
                           f"{names[frame[k]]!r} (entry {frame[k] + 1} of {list_path}), which belongs to another "
                           "pid, camera or tracklet (expected one tracklet's frames)")
    _check_pid_folders(arr, folder, list_path, dataset)
    base, sep = str(folder), os.sep
    paths = [f"{base}{sep}{n[:4]}{sep}{n}" for n in names]
    return [(tuple(paths[s:e]), int(p), int(c) - 1, int(ftrk[s]))
            for s, e, p, c in zip(start.tolist(), end.tolist(), info[:, 2].tolist(), info[:, 3].tolist(), strict=True)]


def _check_pid_folders(names: np.ndarray, folder: Path, list_path: Path, dataset: str) -> None:
    """Each `<pid>/` folder named by the list exists under `folder` (frames themselves are not stat'ed)."""
    for pid_dir in np.unique(names.astype("<U4")).tolist():
        if not (folder / pid_dir).is_dir():
            raise DatasetError(f"{dataset}: {folder / pid_dir} does not exist (expected the frames of "
                               f"{list_path.name} under <pid>/ folders of {folder})")


def _mars_query(path: Path, num_tracks: int, dataset: str) -> np.ndarray:
    """0-based query rows from query_IDX.mat (1-based, distinct, within the test tracks)."""
    idx = _load_mat(path, _MARS_MAT_KEYS["query_IDX.mat"], dataset).ravel()
    if idx.size == 0:
        raise DatasetError(f"{dataset}: {path} is empty (expected the 1-based indices of the query test tracks)")
    bad = np.flatnonzero((idx < 1) | (idx > num_tracks))
    if bad.size:
        raise DatasetError(f"{dataset}: {path} entry {bad[0] + 1} = {idx[bad[0]]} points past the {num_tracks:,} "
                           f"test tracks (expected 1-based indices in 1..{num_tracks})")
    if np.unique(idx).size != idx.size:
        raise DatasetError(f"{dataset}: {path} lists a test track twice (expected distinct query indices)")
    return idx - 1


def load_mars_layout(
    root: str | Path,
    name: str = "mars",
    *,
    keep_junk: bool = False,
    min_seq_len: int = 0,
    num_cameras: int | None = 6,
) -> VideoReIDData:
    """Parse a MARS-layout folder (`bbox_train/`, `bbox_test/`, `info/`).

    `keep_junk`: keep pid -1 tracklets in the gallery (never in train/query). `min_seq_len`: drop train
    tracklets with fewer frames. `num_cameras`: largest valid camera number (None: any single digit).
    """
    what = "folders bbox_train, bbox_test, info"
    path = _check_root(root, ("bbox_train", "bbox_test", "info"), name, what)
    info = path / "info"
    _check_root(info, MARS_INFO, name, "the MARS info files " + ", ".join(MARS_INFO))
    train_names = _read_mars_names(info / "train_name.txt", name)
    test_names = _read_mars_names(info / "test_name.txt", name)
    train_info = _load_mat(info / "tracks_train_info.mat", _MARS_MAT_KEYS["tracks_train_info.mat"], name)
    test_info = _load_mat(info / "tracks_test_info.mat", _MARS_MAT_KEYS["tracks_test_info.mat"], name)
    train = _mars_tracks(train_names, train_info, path / "bbox_train", info / "tracks_train_info.mat",
                         info / "train_name.txt", name, num_cameras)
    test = _mars_tracks(test_names, test_info, path / "bbox_test", info / "tracks_test_info.mat",
                        info / "test_name.txt", name, num_cameras)
    query_rows = _mars_query(info / "query_IDX.mat", len(test), name)
    is_query = np.zeros(len(test), dtype=bool)
    is_query[query_rows] = True
    train = [t for t in train if t[1] != JUNK_PID and len(t[0]) >= min_seq_len]
    query = [test[i] for i in query_rows.tolist() if test[i][1] != JUNK_PID]
    gallery = [test[i] for i in np.flatnonzero(~is_query).tolist() if keep_junk or test[i][1] != JUNK_PID]
    return VideoReIDData(
        name=name, root=str(path),
        train=_nonempty(_records(train), name, path, f"train (min_seq_len={min_seq_len})"),
        query=_nonempty(_records(query), name, path, "query"),
        gallery=_nonempty(_records(gallery), name, path, "gallery"),
    )


def load_mars(root: str | Path, *, keep_junk: bool = False, min_seq_len: int = 0) -> VideoReIDData:
    """MARS: 6 cameras."""
    return load_mars_layout(root, "mars", keep_junk=keep_junk, min_seq_len=min_seq_len, num_cameras=6)


def load_synthetic_video(root: str | Path, *, keep_junk: bool = False, min_seq_len: int = 0) -> VideoReIDData:
    """The synthetic video preset (`ensure_synthetic(root, "video-small")`): the MARS layout, any camera count."""
    return load_mars_layout(root, "synthetic_video", keep_junk=keep_junk, min_seq_len=min_seq_len,
                            num_cameras=None)


# ----------------------------------------------------------------------------------------------------------
# DukeMTMC-VideoReID
# ----------------------------------------------------------------------------------------------------------
def _duke_video_camera(folder: Path, frames: list[str], pid: int, dataset: str, num_cameras: int) -> int:
    """0-based camera of one tracklet folder; every frame must parse and share the pid and camera."""
    if _DUKE_VIDEO_NAMES_RE.fullmatch("\n".join(frames) + "\n") is None:
        bad = next(n for n in frames if _DUKE_VIDEO_NAME_RE.match(n) is None)
        raise DatasetError(f"{dataset}: cannot parse frame name {folder / bad} (expected {_DUKE_VIDEO_EXAMPLE})")
    m = _DUKE_VIDEO_NAME_RE.match(frames[0])
    assert m is not None  # checked above
    prefix = f"{m.group(1)}_C{m.group(2)}_F"
    # frames are sorted: the first and the last sharing `prefix` means every frame in between does too
    if not frames[-1].startswith(prefix):
        raise DatasetError(f"{dataset}: tracklet folder {folder} mixes {frames[0]} and {frames[-1]} (expected one "
                           "pid and one camera per tracklet)")
    cam = int(m.group(2))
    if int(m.group(1)) != pid or not 1 <= cam <= num_cameras:
        raise DatasetError(f"{dataset}: {folder / frames[0]} has pid {int(m.group(1))} / camera {cam} (expected "
                           f"the pid of its folder, {pid}, and camera in 1..{num_cameras})")
    return cam - 1


def _duke_video_split(folder: Path, dataset: str, num_cameras: int,
                      min_seq_len: int) -> list[tuple[tuple[str, ...], int, int, int]]:
    rows = []
    for pid_name in _sorted_dirs(folder):
        for trk_name in _sorted_dirs(folder / pid_name):
            tdir = folder / pid_name / trk_name
            if not (pid_name.isdigit() and trk_name.isdigit()):
                raise DatasetError(f"{dataset}: cannot parse tracklet folder {tdir} (expected <pid>/<tracklet>/ "
                                   "with numeric names, e.g. 0001/0001/)")
            frames = _list_images(tdir)
            if not frames:
                raise DatasetError(f"{dataset}: tracklet folder {tdir} is empty (expected its frames, "
                                   f"{'/'.join(IMAGE_EXTENSIONS)})")
            camid = _duke_video_camera(tdir, frames, int(pid_name), dataset, num_cameras)
            if len(frames) >= min_seq_len:
                rows.append((tuple(f"{tdir}{os.sep}{n}" for n in frames), int(pid_name), camid, int(trk_name)))
    return rows


def load_dukemtmc_videoreid(root: str | Path, *, min_seq_len: int = 0) -> VideoReIDData:
    """DukeMTMC-VideoReID (withdrawn with DukeMTMC; for users who hold a copy): 8 cameras, read from frame names.

    `min_seq_len`: drop train tracklets with fewer frames.
    """
    name = "dukemtmcvideoreid"
    path = _check_root(root, DUKE_VIDEO_SPLITS, name, "folders train, query, gallery of <pid>/<tracklet>/ frames")
    splits = {s: _duke_video_split(path / s, name, 8, min_seq_len if s == "train" else 0) for s in DUKE_VIDEO_SPLITS}
    return VideoReIDData(name=name, root=str(path),
                         **{s: _nonempty(_records(rows), name, path / s, s) for s, rows in splits.items()})


# ----------------------------------------------------------------------------------------------------------
# PRID2011 and iLIDS-VID: two cameras, one tracklet per person per camera, random identity splits
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _TwoCameraLayout:
    name: str
    cameras: tuple[str, str]  # probe (query) camera folder, gallery camera folder, relative to the root
    person: re.Pattern[str]
    example: str


PRID2011 = _TwoCameraLayout("prid2011", ("multi_shot/cam_a", "multi_shot/cam_b"), re.compile(r"person_(\d+)"),
                            "person_0001")
ILIDSVID = _TwoCameraLayout("ilidsvid", ("sequences/cam1", "sequences/cam2"), re.compile(r"person(\d+)"),
                            "person001")


def _camera_persons(folder: Path, layout: _TwoCameraLayout) -> dict[str, int]:
    """Person folder name -> pid for one camera folder."""
    persons = {}
    expected = layout.person.pattern.replace(r"(\d+)", "<number>")
    for sub in _sorted_dirs(folder):
        m = layout.person.fullmatch(sub)
        if m is None:
            raise DatasetError(f"{layout.name}: cannot parse person folder {folder / sub} (expected "
                               f"{expected}, e.g. {layout.example})")
        persons[sub] = int(m.group(1))
    return persons


def _both_camera_frames(root: Path, layout: _TwoCameraLayout) -> dict[str, tuple[int, list[str], list[str]]]:
    """Person -> (pid, frames in camera 1, frames in camera 2), for the persons seen by both cameras."""
    first, second = (root / c for c in layout.cameras)
    a, b = _camera_persons(first, layout), _camera_persons(second, layout)
    both = sorted(set(a) & set(b), key=lambda p: a[p])
    if not both:
        raise DatasetError(f"{layout.name}: no person folder is in both {first} and {second} (expected the same "
                           f"person folders, e.g. {layout.example}, in both cameras)")
    out = {}
    for person in both:
        frames = []
        for cam_dir in (first, second):
            names = _list_images(cam_dir / person)
            if not names:
                raise DatasetError(f"{layout.name}: tracklet folder {cam_dir / person} is empty (expected its "
                                   f"frames, {'/'.join(IMAGE_EXTENSIONS)})")
            frames.append([str(cam_dir / person / n) for n in names])
        out[person] = (a[person], frames[0], frames[1])
    return out


def make_identity_splits(persons: Sequence[str], num_splits: int = NUM_SPLITS, seed: int = 0) -> list[dict]:
    """`num_splits` random 50/50 identity splits of `persons`: [{"train": [...], "test": [...]}, ...].

    Each split keeps the order of `persons`; with an odd count the test half gets the extra person.
    """
    rng = np.random.default_rng(seed)
    half = len(persons) // 2
    splits = []
    for _ in range(num_splits):
        perm = rng.permutation(len(persons))
        train, test = np.sort(perm[:half]), np.sort(perm[half:])
        splits.append({"train": [persons[i] for i in train], "test": [persons[i] for i in test]})
    return splits


def _read_splits(path: Path, dataset: str, settings: Mapping[str, int]) -> list[dict]:
    """Splits of a split file: ours ({"seed", "min_seq_len", "splits"}) or torchreid's (a bare list)."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"{dataset}: cannot read split file {path}: {err} (expected JSON)") from err
    if isinstance(content, dict):
        written = {k: content.get(k) for k in settings}
        if written != dict(settings):
            raise DatasetError(f"{dataset}: split file {path} was written for {written}, not {dict(settings)} "
                               "(delete it to draw new splits, or set split_file to another path)")
        content = content.get("splits")
    if not isinstance(content, list) or not content or not all(
            isinstance(s, dict) and isinstance(s.get("train"), list) and isinstance(s.get("test"), list)
            for s in content):
        raise DatasetError(f"{dataset}: split file {path} is malformed (expected a list of "
                           '{"train": [person folders], "test": [person folders]})')
    return content


def _write_splits(path: Path, splits: list[dict], dataset: str, settings: Mapping[str, int]) -> None:
    """Write the split file atomically; an unwritable location is logged, the splits are still used."""
    body = json.dumps({"dataset": dataset, **settings, "splits": splits}, indent=1)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(body)
        os.replace(tmp, path)
        log.info("%s: wrote %d identity splits to %s", dataset, len(splits), path)
    except OSError as err:
        log.warning("%s: cannot write the split file %s (%s); using the seeded splits without saving them",
                    dataset, path, err.strerror)


def _split_persons(splits: list[dict], split_id: int, path: Path, available: Mapping[str, Any],
                   dataset: str) -> tuple[list[str], list[str]]:
    if not 0 <= split_id < len(splits):
        raise DatasetError(f"{dataset}: split_id={split_id} is out of range (expected 0..{len(splits) - 1}: "
                           f"{path} holds {len(splits)} splits)")
    train, test = splits[split_id]["train"], splits[split_id]["test"]
    missing = [p for p in train + test if p not in available]
    if missing:
        raise DatasetError(f"{dataset}: split file {path} names person {missing[0]!r} ({len(missing)} in all), "
                           "which is not in both cameras of the dataset (expected persons of both cameras)")
    if set(train) & set(test):
        raise DatasetError(f"{dataset}: split {split_id} of {path} has persons in both train and test")
    return train, test


def _load_two_camera(root: str | Path, layout: _TwoCameraLayout, *, split_id: int, seed: int, min_seq_len: int,
                     split_file: str | Path | None) -> VideoReIDData:
    name = layout.name
    path = _check_root(root, layout.cameras, name, f"folders {' and '.join(layout.cameras)} of person folders")
    found = _both_camera_frames(path, layout)
    persons = [p for p, (_, a, b) in found.items() if min(len(a), len(b)) >= min_seq_len]
    split_path = path / (split_file if split_file is not None else f"splits_{name}.json")
    settings = {"seed": seed, "min_seq_len": min_seq_len}
    if split_path.exists():
        splits = _read_splits(split_path, name, settings)
    else:
        if len(persons) < 2:
            raise DatasetError(f"{name}: {path} has {len(persons)} person(s) in both cameras with at least "
                               f"{min_seq_len} frames (expected at least 2 to split)")
        splits = make_identity_splits(persons, NUM_SPLITS, seed)
        _write_splits(split_path, splits, name, settings)
    train_persons, test_persons = _split_persons(splits, split_id, split_path, found, name)
    train = [(tuple(found[p][1 + cam]), found[p][0], cam, 1) for p in train_persons for cam in (0, 1)]
    query = [(tuple(found[p][1]), found[p][0], 0, 1) for p in test_persons]
    gallery = [(tuple(found[p][2]), found[p][0], 1, 1) for p in test_persons]
    return VideoReIDData(name=name, root=str(path), split_id=split_id,
                         train=_nonempty(_records(train), name, split_path, f"train (split {split_id})"),
                         query=_nonempty(_records(query), name, split_path, f"query (split {split_id})"),
                         gallery=_records(gallery))


def load_prid2011(root: str | Path, *, split_id: int = 0, seed: int = 0, min_seq_len: int = 0,
                  split_file: str | Path | None = None) -> VideoReIDData:
    """PRID2011 (`multi_shot/cam_a|cam_b/person_XXXX/`): the persons in both cameras, identity split `split_id`.

    `min_seq_len`: keep the persons whose two tracklets have at least that many frames (22: DVR's 178 persons).
    `split_file`: the split file (relative to the root; default `splits_prid2011.json`).
    """
    return _load_two_camera(root, PRID2011, split_id=split_id, seed=seed, min_seq_len=min_seq_len,
                            split_file=split_file)


def load_ilidsvid(root: str | Path, *, split_id: int = 0, seed: int = 0, min_seq_len: int = 0,
                  split_file: str | Path | None = None) -> VideoReIDData:
    """iLIDS-VID (`sequences/cam1|cam2/personXXX/`, the folder inside `i-LIDS-VID/`): identity split `split_id`."""
    return _load_two_camera(root, ILIDSVID, split_id=split_id, seed=seed, min_seq_len=min_seq_len,
                            split_file=split_file)


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------
VIDEO_DATASETS: dict[str, Callable[..., VideoReIDData]] = {
    "mars": load_mars,
    "dukemtmcvideoreid": load_dukemtmc_videoreid,
    "prid2011": load_prid2011,
    "ilidsvid": load_ilidsvid,
    "synthetic_video": load_synthetic_video,
}

_VIDEO_OPTIONS = {
    "mars": {"keep_junk", "min_seq_len"},
    "dukemtmcvideoreid": {"min_seq_len"},
    "prid2011": {"split_id", "seed", "min_seq_len", "split_file"},
    "ilidsvid": {"split_id", "seed", "min_seq_len", "split_file"},
    "synthetic_video": {"keep_junk", "min_seq_len"},
}

# Names other codebases use (torchreid: mars, dukemtmcvidreid, prid2011, ilidsvid) -> ours.
VIDEO_ALIASES: dict[str, str] = {
    "dukemtmcvidreid": "dukemtmcvideoreid", "dukemtmc-videoreid": "dukemtmcvideoreid",
    "dukemtmc-vidreid": "dukemtmcvideoreid", "dukevideo": "dukemtmcvideoreid", "duke-video": "dukemtmcvideoreid",
    "prid": "prid2011", "prid-2011": "prid2011", "prid_2011": "prid2011",
    "ilids-vid": "ilidsvid", "i-lids-vid": "ilidsvid", "ilids": "ilidsvid",
    "synthetic-video": "synthetic_video",
}

_VIDEO_LAYOUTS: dict[str, tuple[str, ...]] = {
    "mars": ("bbox_train", "bbox_test", "info"),
    "dukemtmcvideoreid": DUKE_VIDEO_SPLITS,
    "prid2011": PRID2011.cameras,
    "ilidsvid": ILIDSVID.cameras,
    "synthetic_video": ("bbox_train", "bbox_test", "info"),
}

# The official folder a root may hold (torchreid's layout): `dataset.root` may point at a folder above it.
VIDEO_OFFICIAL_FOLDERS: dict[str, tuple[str, ...]] = {
    "mars": ("MARS", "mars"),
    "dukemtmcvideoreid": ("DukeMTMC-VideoReID", "dukemtmc-vidreid/DukeMTMC-VideoReID",
                          "dukemtmcvidreid/DukeMTMC-VideoReID", "dukemtmcvideoreid/DukeMTMC-VideoReID"),
    "prid2011": ("prid_2011", "prid2011/prid_2011", "PRID2011/prid_2011", "prid2011"),
    "ilidsvid": ("i-LIDS-VID", "ilids-vid/i-LIDS-VID", "ilidsvid/i-LIDS-VID", "iLIDS-VID/i-LIDS-VID"),
    "synthetic_video": (),  # the data module passes the generated folder itself
}


def canonical_video_name(name: str) -> str:
    """Our video dataset key for `name` or one of its `VIDEO_ALIASES` (case-insensitive)."""
    key = str(name).lower()
    return VIDEO_ALIASES.get(key, key)


def is_video_dataset(name: str) -> bool:
    """Whether `name` (or an alias) is a video dataset of `VIDEO_DATASETS`."""
    return canonical_video_name(name) in VIDEO_DATASETS


def resolve_video_root(name: str, root: str | Path) -> Path:
    """The folder holding the layout: `root` itself or the official folder inside it (logged); see `resolve_root`."""
    name = canonical_video_name(name)
    path = Path(os.path.abspath(os.path.expanduser(str(root))))

    def has_layout(folder: Path) -> bool:
        return all((folder / d).is_dir() for d in _VIDEO_LAYOUTS[name])

    if not path.is_dir() or has_layout(path):
        return path
    hits = [path / sub for sub in VIDEO_OFFICIAL_FOLDERS[name] if has_layout(path / sub)]
    distinct = list(dict.fromkeys(h.resolve() for h in hits))
    if len(distinct) > 1:
        raise DatasetError(f"{name}: dataset.root {path} holds {len(distinct)} copies ({', '.join(map(str, hits))});"
                           " set dataset.root to the one to use")
    if hits:
        log.info("%s: dataset.root %s holds the official folder %s; reading it", name, path, hits[0].relative_to(path))
        return hits[0]
    return path


def load_video_dataset(name: str, root: str | Path, **options: Any) -> VideoReIDData:
    """Parse video dataset `name` (one of `VIDEO_DATASETS` or `VIDEO_ALIASES`) under `root` (or its official
    folder, see `resolve_video_root`), with its parser's keyword options."""
    name = canonical_video_name(name)
    if name not in VIDEO_DATASETS:
        raise DatasetError(f"unknown video dataset {name!r} (expected one of {', '.join(sorted(VIDEO_DATASETS))} "
                           f"or an alias: {', '.join(sorted(VIDEO_ALIASES))})")
    unknown = sorted(set(options) - _VIDEO_OPTIONS[name])
    if unknown:
        raise DatasetError(f"{name}: unknown option(s) {', '.join(unknown)} "
                           f"(expected a subset of {', '.join(sorted(_VIDEO_OPTIONS[name]))})")
    return VIDEO_DATASETS[name](resolve_video_root(name, root), **options)


# ----------------------------------------------------------------------------------------------------------
# Published statistics (compare with `mprd.data.datasets.check_statistics`, which reads `data.statistics()`)
# ----------------------------------------------------------------------------------------------------------
# Default options. MARS: torchreid's summary (junk dropped); 20,478 tracklets = 8,298 train + 12,180 test.
# DukeMTMC-VideoReID: SSLR §4.1 (train only; the query/gallery division of the 2,636 test tracklets is not
# stated in the seeds). PRID2011 / iLIDS-VID: one 50/50 split of the persons in both cameras (200 / 300).
VIDEO_PUBLISHED_STATS: dict[str, dict[str, dict[str, int]]] = {
    "mars": {
        "train": {"tracklets": 8298, "ids": 625, "cameras": 6},
        "query": {"tracklets": 1980},
        "gallery": {"tracklets": 9330},  # 12,180 test - 1,980 query - 870 junk
    },
    "dukemtmcvideoreid": {"train": {"tracklets": 2196, "ids": 702}},
    "prid2011": {
        "train": {"tracklets": 200, "ids": 100, "cameras": 2},
        "query": {"tracklets": 100, "ids": 100, "cameras": 1},
        "gallery": {"tracklets": 100, "ids": 100, "cameras": 1},
    },
    "ilidsvid": {
        "train": {"tracklets": 300, "ids": 150, "cameras": 2},
        "query": {"tracklets": 150, "ids": 150, "cameras": 1},
        "gallery": {"tracklets": 150, "ids": 150, "cameras": 1},
    },
}
MARS_JUNK_TRACKLETS = 870
PRID2011_DVR_MIN_SEQ_LEN = 22  # "sequence pairs with more than 21 frames" (Wang et al. 2014): 178 persons
PRID2011_DVR_PERSONS = 178


def expected_video_statistics(name: str, **options: Any) -> dict[str, dict[str, int]]:
    """Published numbers matching `load_video_dataset(name, ..., **options)`; {} when none are known."""
    name = canonical_video_name(name)
    if name not in VIDEO_PUBLISHED_STATS:
        return {}
    stats = {split: dict(values) for split, values in VIDEO_PUBLISHED_STATS[name].items()}
    min_seq_len = options.get("min_seq_len", 0)
    if name == "mars":
        if options.get("keep_junk", False):
            stats["gallery"]["tracklets"] += MARS_JUNK_TRACKLETS
        if min_seq_len:
            del stats["train"]["tracklets"]  # depends on the frame counts
    if name == "dukemtmcvideoreid" and min_seq_len:
        del stats["train"]["tracklets"]
    if name == "prid2011" and min_seq_len == PRID2011_DVR_MIN_SEQ_LEN:
        half = PRID2011_DVR_PERSONS // 2
        stats = {"train": {"tracklets": 2 * half, "ids": half, "cameras": 2},
                 "query": {"tracklets": half, "ids": half, "cameras": 1},
                 "gallery": {"tracklets": half, "ids": half, "cameras": 1}}
    elif name in ("prid2011", "ilidsvid") and min_seq_len:
        return {}
    return stats
