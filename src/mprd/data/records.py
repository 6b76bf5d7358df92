"""The record types every dataset parser returns (images; tracklets for video), and the dataset error.

Every image parser (Market-1501, DukeMTMC-reID, MSMT17, CUHK03-NP, synthetic) yields `ReIDData`, every
video parser (MARS, DukeMTMC-VideoReID, PRID2011, iLIDS-VID) `VideoReIDData`, so the rest of the suite
never sees a dataset's file naming.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class DatasetError(ValueError):
    """Bad dataset input; the message names the path or setting and says what was expected."""


def split_counts(records: list, unit: str) -> dict[str, int]:
    """{unit: records, "ids": distinct pids, "cameras": distinct cameras} of one split (images or tracklets)."""
    return {unit: len(records), "ids": len({r.pid for r in records}), "cameras": len({r.camid for r in records})}


@dataclass(frozen=True)
class ImageRecord:
    """One image. `index` is its position in its split (for train: the memory slot)."""

    path: str
    pid: int
    camid: int  # 0-based
    index: int


@dataclass
class ReIDData:
    """Train / query / gallery splits of one dataset.

    `camstyle[i]` lists CamStyle renders of train image i (other cameras' styles); empty when absent.
    Train pids are the dataset's own ids (not relabelled): only `super`, the meta identities, UGA's
    within-camera grouping and diagnostics may read them.
    """

    name: str
    root: str
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    camstyle: dict[int, list[str]] = field(default_factory=dict)

    def statistics(self) -> dict[str, dict[str, int]]:
        """Images / identities / cameras per split (pid 0 and -1 count as identities in the gallery)."""

        stats = {split: split_counts(getattr(self, split), "images") for split in ("train", "query", "gallery")}
        return {
            **stats,
            "camstyle": {"images": sum(len(v) for v in self.camstyle.values()), "ids": 0, "cameras": 0},
        }

    @property
    def num_train(self) -> int:
        return len(self.train)

    @property
    def num_cameras(self) -> int:
        return len({r.camid for r in self.train + self.query + self.gallery})


@dataclass(frozen=True)
class TrackletRecord:
    """One tracklet (video re-ID): its frames in temporal order, one person seen by one camera.

    `index` is its position in its split (for train: the tracklet's slot); `tracklet` is the dataset's own
    1-based tracklet number within (pid, camera) (MARS' `T` field, DukeMTMC-VideoReID's folder; 1 for
    PRID2011 and iLIDS-VID, which hold one tracklet per person per camera).
    """

    paths: tuple[str, ...]
    pid: int
    camid: int  # 0-based
    index: int
    tracklet: int = 1

    @property
    def num_frames(self) -> int:
        return len(self.paths)


@dataclass
class VideoReIDData:
    """Train / query / gallery tracklets of one video dataset (pids as the dataset gives them, not relabelled).

    `split_id` is the identity split used (PRID2011, iLIDS-VID; None for datasets with one fixed split).
    """

    name: str
    root: str
    train: list[TrackletRecord]
    query: list[TrackletRecord]
    gallery: list[TrackletRecord]
    split_id: int | None = None

    def statistics(self) -> dict[str, dict[str, int]]:
        """Tracklets / identities / cameras / frames per split (pid 0 and -1 count as identities)."""

        def stats(records: list[TrackletRecord]) -> dict[str, int]:
            return {**split_counts(records, "tracklets"), "frames": sum(r.num_frames for r in records)}

        return {split: stats(getattr(self, split)) for split in ("train", "query", "gallery")}

    @property
    def num_train(self) -> int:
        return len(self.train)

    @property
    def num_cameras(self) -> int:
        return len({r.camid for r in self.train + self.query + self.gallery})
