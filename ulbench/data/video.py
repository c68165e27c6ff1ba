"""Video clips: decord decoding (the optional `video` extra; PyAV without it) in a killable worker process, the
Kinetics-600 layout, and embedded pan/zoom clips.

Hang guard: decord 0.6.0 can spin forever inside native code while holding the GIL (dmlc/decord#373, #375:
only SIGKILL stops it), so a thread timeout cannot help. Clips are decoded in one persistent worker
process (`python -c`, importing only numpy and decord, talking JSON lines + raw bytes, no pickles); a clip
that takes longer than `timeout_s` gets the worker SIGKILLed and restarted, and a worker crash (segfault on
a damaged file) becomes a `BadVideoError`. The same decode code runs in-process with `timeout_s=0`.
"""

from __future__ import annotations

import atexit
import csv
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
SPLIT_ALIASES = {"train": "train", "val": "val", "validate": "val", "validation": "val", "eval": "val",
                 "test": "test"}
WORKER_START_TIMEOUT_S = 120.0  # importing decord on a loaded machine; separate from the per-clip timeout

_WORKER_SOURCE = r'''
import json, os, sys
import numpy as np


def clip_indices(num_available, num_frames, stride, start, seed, index):
    span = (num_frames - 1) * stride + 1
    if start is None:  # deterministic by (seed, index)
        start = int(np.random.default_rng([seed, index]).integers(0, max(num_available - span, 0) + 1))
    return np.minimum(start + stride * np.arange(num_frames), num_available - 1)


def decode_decord(path, num_frames, stride, start, seed, index):
    import decord
    decord.logging.set_level(decord.logging.QUIET)
    vr = decord.VideoReader(path, num_threads=1)
    n = len(vr)
    if n < 1:
        raise ValueError("the container holds no video frames")
    idx = clip_indices(n, num_frames, stride, start, seed, index)
    frames = vr.get_batch(idx.tolist()).asnumpy()
    return frames, {"num_available": n, "fps": float(vr.get_avg_fps()), "indices": idx.tolist(), "decoder": "decord"}


def decode_pyav(path, num_frames, stride, start, seed, index):
    import av
    with av.open(path) as container:
        stream = container.streams.video[0]
        every = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        fps = float(stream.average_rate or 0)
    if not every:
        raise ValueError("the container holds no decodable video frames")
    idx = clip_indices(len(every), num_frames, stride, start, seed, index)
    return np.stack([every[i] for i in idx]), {"num_available": len(every), "fps": fps, "indices": idx.tolist()}


NO_DECORD = 'decord is not installed (optional: pip install "ulbench[video]")'


def decode(path, num_frames, stride, start, seed, index):
    try:
        frames, info = decode_decord(path, num_frames, stride, start, seed, index)
    except Exception as e:  # decord 0.6.0 rejects some valid files (e.g. 48 px wide): PyAV decodes all frames
        why = NO_DECORD if isinstance(e, ImportError) else f"decord failed: {str(e)[-80:]}"
        try:
            frames, info = decode_pyav(path, num_frames, stride, start, seed, index)
        except ImportError as e2:
            raise RuntimeError(f"no video decoder: {why}, and PyAV does not import ({e2}); "
                               f"pip install av, or pip install \"ulbench[video]\"") from None
        except Exception as e2:
            first = NO_DECORD if isinstance(e, ImportError) else f"decord: {type(e).__name__}: {e}"
            raise ValueError(f"{first}; PyAV: {type(e2).__name__}: {e2}") from None
        info["decoder"] = f"pyav ({why})"
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[0] != num_frames or frames.shape[-1] != 3:
        raise ValueError(f"decoder returned frames of shape {frames.shape}")
    return frames, info


def serve():
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # native code printing to stdout must not corrupt the protocol
    out.write(b'{"ready": true}\n')
    out.flush()
    for line in sys.stdin.buffer:
        try:
            frames, info = decode(**json.loads(line))
            out.write(json.dumps({"ok": True, "shape": list(frames.shape), **info}).encode() + b"\n")
            out.write(frames.tobytes())
        except Exception as e:
            out.write(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    serve()
'''
_LOCAL: dict[str, Any] = {"__name__": "ulbench_video_decode"}
exec(compile(_WORKER_SOURCE, "<ulbench video decode>", "exec"), _LOCAL)  # same code in-process (timeout_s=0)


class BadVideoError(ValueError):
    """A video file that cannot be decoded (empty, truncated, not a video, hangs the decoder); names the file."""


class _DecodeWorker:
    """One decode subprocess per parent process; killed (SIGKILL) and restarted after a timeout or crash."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.owner_pid = -1
        self.buf = bytearray()
        self.lock = threading.Lock()

    def _start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_SOURCE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.owner_pid, self.buf = os.getpid(), bytearray()
        try:
            head = json.loads(self._read(time.monotonic() + WORKER_START_TIMEOUT_S))
        except (TimeoutError, EOFError, ValueError) as e:
            self.stop()
            raise RuntimeError(f"the video decode worker did not start ({type(e).__name__}); does numpy import "
                               f"for {sys.executable}? Try `python -c 'import numpy'`") from e
        if not head.get("ready"):
            self.stop()
            raise RuntimeError(f"the video decode worker sent {head!r} instead of a ready message")

    def stop(self) -> None:
        """Kill the worker (our own child, by handle) and forget it."""
        if self.proc is not None and self.owner_pid == os.getpid():
            self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                f.close()
        self.proc = None

    def _read(self, deadline: float, size: int | None = None) -> bytes:
        """One line (size None) or exactly `size` bytes, before `deadline`."""
        fd = self.proc.stdout.fileno()
        while True:
            if size is None and (k := self.buf.find(b"\n")) >= 0:
                out = bytes(self.buf[:k])
                del self.buf[:k + 1]
                return out
            if size is not None and len(self.buf) >= size:
                out = bytes(self.buf[:size])
                del self.buf[:size]
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
            chunk = os.read(fd, 1 << 22)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def decode(self, request: dict[str, Any], timeout_s: float) -> tuple[np.ndarray, dict[str, Any]]:
        """Send one request; frames (T, H, W, 3) uint8 and info, or BadVideoError naming the file."""
        path = request["path"]
        with self.lock:
            if self.owner_pid != os.getpid():
                self.proc = None  # inherited through fork: the parent's worker, not ours to use or kill
            if self.proc is None or self.proc.poll() is not None:
                self.stop()
                self._start()
            try:
                self.proc.stdin.write(json.dumps(request).encode() + b"\n")
                self.proc.stdin.flush()
                deadline = time.monotonic() + timeout_s
                head = json.loads(self._read(deadline))
                if not head.get("ok"):
                    raise BadVideoError(f"{path}: not a readable video ({head.get('error')}); remove or re-encode "
                                        f"it, or pass skip_bad to count and skip it")
                shape = tuple(int(s) for s in head["shape"])
                frames = np.frombuffer(self._read(deadline, int(np.prod(shape))), np.uint8).reshape(shape).copy()
                return frames, {k: v for k, v in head.items() if k not in ("ok", "shape")}
            except TimeoutError:
                self.stop()
                raise BadVideoError(f"{path}: decoding did not finish within {timeout_s:g} s (decord can hang on "
                                    f"some files, dmlc/decord#373); the decoder was killed. Re-encode the file, "
                                    f"raise timeout_s, or pass skip_bad to count and skip it") from None
            except (EOFError, BrokenPipeError) as e:
                code = self.proc.wait() if self.proc is not None else None
                self.proc = None
                raise BadVideoError(f"{path}: the decoder process crashed (exit code {code}) on this file; remove "
                                    f"or re-encode it, or pass skip_bad to count and skip it") from e


_WORKER = _DecodeWorker()
atexit.register(_WORKER.stop)


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def decode_clip(path: str | os.PathLike, num_frames: int = 16, stride: int = 1, start: int | None = None,
                seed: int = 0, index: int = 0, timeout_s: float | None = 30.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Native-size frames (T, H, W, 3) uint8 of one clip and its info (fps, frame indices, frames available)."""
    num_frames, stride = _check_positive_int("num_frames", num_frames), _check_positive_int("stride", stride)
    seed, index = _check_positive_int("seed", seed, 0), _check_positive_int("index", index, 0)
    if start is not None:
        start = _check_positive_int("start", start, 0)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise BadVideoError(f"{path}: empty file (0 bytes); remove it or pass skip_bad to count and skip it")
    request = {"path": str(path), "num_frames": num_frames, "stride": stride, "start": start, "seed": seed,
               "index": index}
    if timeout_s:
        return _WORKER.decode(request, float(timeout_s))
    try:
        frames, info = _LOCAL["decode"](**request)
    except Exception as e:  # decord and PyAV both failed
        raise BadVideoError(f"{path}: not a readable video ({type(e).__name__}: {e}); remove or re-encode it, "
                            f"or pass skip_bad to count and skip it") from e
    return frames, info


def resize_center_crop(frames: np.ndarray, resolution: int) -> torch.Tensor:
    """Short side to `resolution` (PIL antialiased bilinear, single-threaded), centre crop: (T, H, W, 3) uint8 ->
    (T, 3, res, res) uint8."""
    from PIL import Image

    h, w = frames.shape[1:3]
    if (h, w) != (resolution, resolution):
        scale = resolution / min(h, w)
        size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))  # PIL: (width, height)
        top, left = (size[1] - resolution) // 2, (size[0] - resolution) // 2
        frames = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR))
                           [top:top + resolution, left:left + resolution] for f in frames])
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()


def read_clip(path: str | os.PathLike, num_frames: int = 16, stride: int = 1, resolution: int = 64,
              start: int | None = None, seed: int = 0, index: int = 0, timeout_s: float | None = 30.0) -> torch.Tensor:
    """A (T, 3, res, res) uint8 clip decoded with decord; clip start by (seed, index) unless given (FVD protocol,
    Unterthiner et al. 2018: fixed-length clips at a fixed stride)."""
    resolution = _check_positive_int("resolution", resolution)
    frames, _ = decode_clip(path, num_frames, stride, start, seed, index, timeout_s)
    return resize_center_crop(frames, resolution)


class VideoDataset:
    """Indexable clips: `get(indices)` -> (uint8 (N, T, 3, H, W), int64 labels); `info()` is its provenance."""

    name, split = "videos", "train"
    num_classes = resolution = num_frames = 0
    stride = 1

    def __len__(self) -> int:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Dataset provenance: name, split, clip shape, count."""
        return {"dataset": self.name, "split": self.split, "resolution": self.resolution,
                "num_frames": self.num_frames, "stride": self.stride, "num_videos": len(self),
                "num_classes": self.num_classes}


class KineticsDataset(VideoDataset):
    """Kinetics-600 (Carreira et al. 2018): official annotation CSV `label,youtube_id,time_start,time_end,split`,
    clips at root/<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4 (or any folder below root)."""

    name = "kinetics600"

    def __init__(self, root: str, split: str = "train", annotations: str | None = None, num_frames: int = 16,
                 stride: int = 1, resolution: int = 64, skip_bad: bool = False, seed: int = 0,
                 timeout_s: float = 30.0, **_: Any):
        if split not in SPLIT_ALIASES:
            raise ValueError(f"split must be one of {sorted(SPLIT_ALIASES)}, got {split!r}")
        self.root, self.split = Path(root).expanduser(), SPLIT_ALIASES[split]
        if not self.root.is_dir():
            raise ValueError(f"Kinetics root {root!r} is not a directory; expected <root>/<split>/<label>/*.mp4")
        self.num_frames = _check_positive_int("num_frames", num_frames)
        self.stride = _check_positive_int("stride", stride)
        self.resolution = _check_positive_int("resolution", resolution)
        self.skip_bad, self.seed, self.timeout_s = skip_bad, seed, timeout_s
        self.skipped: list[tuple[str, str]] = []
        self.fps_seen: set[float] = set()
        self.decoders: dict[str, int] = {}  # clips decoded by decord / by the PyAV fallback
        self.annotations = self._find_annotations(annotations)
        rows, classes = self._read_rows()
        self.classes = classes
        self.num_classes = len(classes)
        self._stems: dict[str, Path] | None = None
        self.paths, labels, missing = [], [], []
        for label, name in rows:
            path = self._resolve(label, name)
            if path is None:
                missing.append(name)
                continue
            self.paths.append(path)
            labels.append(classes.index(label) if label in classes else -1)
        self.labels = np.array(labels, dtype=np.int64)
        if missing and not skip_bad:
            raise FileNotFoundError(f"{len(missing)} of {len(rows)} {self.split} clips listed in {self.annotations} "
                                    f"are missing under {self.root} (first: {', '.join(missing[:3])}); download "
                                    f"them or pass skip_bad to count and skip them")
        self.skipped += [(name, "missing file") for name in missing]

    def _find_annotations(self, annotations: str | None) -> Path:
        names = {"train": ["train"], "val": ["val", "validate"], "test": ["test"]}[self.split]
        candidates = [Path(annotations).expanduser()] if annotations else [
            d / f"{n}.csv" for d in (self.root, self.root / "annotations") for n in names]
        for path in candidates:
            if path.is_file():
                return path
        raise FileNotFoundError(f"Kinetics annotations not found (looked at: {', '.join(map(str, candidates))}); "
                                f"pass annotations=CSV (the official kinetics600 {names[-1]}.csv)")

    def _read_rows(self) -> tuple[list[tuple[str, str]], list[str]]:
        with open(self.annotations, newline="") as f:
            reader = csv.DictReader(f)
            fields = set(reader.fieldnames or ())
            need = {"youtube_id", "time_start", "time_end"}
            if not need <= fields:
                raise ValueError(f"{self.annotations}: columns {sorted(fields)}; expected the official Kinetics "
                                 f"header label,youtube_id,time_start,time_end,split")
            rows, labels = [], set()
            for i, r in enumerate(reader):
                label = (r.get("label") or "").strip()
                if label:
                    labels.add(label)
                if "split" in fields and SPLIT_ALIASES.get((r["split"] or "").strip(), "") != self.split:
                    continue
                try:
                    t0, t1 = int(float(r["time_start"])), int(float(r["time_end"]))
                except ValueError as e:
                    raise ValueError(f"{self.annotations} row {i + 2}: time_start/time_end must be numbers, "
                                     f"got {r['time_start']!r}, {r['time_end']!r}") from e
                rows.append((label, f"{r['youtube_id']}_{t0:06d}_{t1:06d}"))
        if not rows:
            raise ValueError(f"{self.annotations}: no rows for split {self.split!r}")
        return rows, sorted(labels)

    def _resolve(self, label: str, name: str) -> Path | None:
        dirs = [self.root / s for s in {"train": ["train"], "val": ["val", "validate"], "test": ["test"]}[self.split]]
        dirs += [self.root]
        for d in dirs:
            for sub in ((label, label.replace(" ", "_"), "") if label else ("",)):
                path = d / sub / f"{name}.mp4"
                if path.is_file():
                    return path
        if self._stems is None:  # any other layout: index every video below root once
            self._stems = {}
            for p in sorted(self.root.rglob("*")):
                if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file():
                    self._stems.setdefault(p.stem, p)
        return self._stems.get(name)

    def __len__(self) -> int:
        return len(self.paths)

    def get_kept(self, indices) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Clips, labels and the indices kept; with skip_bad, bad files go to `self.skipped` and are left out."""
        clips, kept = [], []
        for i in np.asarray(indices, dtype=np.int64).reshape(-1):
            try:
                frames, info = decode_clip(self.paths[i], self.num_frames, self.stride, None, self.seed, int(i),
                                           self.timeout_s)
            except (BadVideoError, FileNotFoundError) as e:
                if not self.skip_bad:
                    raise
                self.skipped.append((self.paths[i].stem, str(e)))
                continue
            self.fps_seen.add(round(info["fps"], 3))
            decoder = info.get("decoder", "decord").split()[0]
            self.decoders[decoder] = self.decoders.get(decoder, 0) + 1
            clips.append(resize_center_crop(frames, self.resolution))
            kept.append(int(i))
        kept_arr = np.array(kept, dtype=np.int64)
        res, t = self.resolution, self.num_frames
        x = torch.stack(clips) if clips else torch.zeros((0, t, 3, res, res), dtype=torch.uint8)
        return x, torch.as_tensor(self.labels[kept_arr]), kept_arr

    def get(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips (uint8 (N, T, 3, H, W)) and labels; bad files raise unless skip_bad."""
        x, labels, _ = self.get_kept(indices)
        return x, labels

    def info(self) -> dict[str, Any]:
        """Provenance: source, annotations, clip protocol, fps seen, files skipped."""
        fps = sorted(self.fps_seen)
        return {**super().info(), "source": str(self.root), "annotations": str(self.annotations),
                "fps": fps[0] if len(fps) == 1 else (fps or None), "clip_start": f"uniform by (seed={self.seed}, "
                "index)", "preprocess": f"short side to {self.resolution} (antialiased bilinear), centre crop",
                "decoders": dict(self.decoders), "skipped": len(self.skipped)}


class VideoTensorDataset(VideoDataset):
    """In-memory clips (the embedded set): one uint8 (N, T, 3, H, W) tensor."""

    def __init__(self, videos: torch.Tensor, labels: torch.Tensor, name: str, split: str, num_classes: int,
                 details: dict[str, Any] | None = None):
        if videos.dtype != torch.uint8 or videos.ndim != 5 or videos.shape[2] != 3:
            raise ValueError(f"videos must be uint8 (N, T, 3, H, W), got {videos.dtype} {tuple(videos.shape)}")
        self.videos, self.labels = videos, labels.to(torch.int64)
        self.name, self.split, self.num_classes = name, split, num_classes
        self.num_frames, self.resolution = int(videos.shape[1]), int(videos.shape[-1])
        self.details = details or {}

    def __len__(self) -> int:
        return int(self.videos.shape[0])

    def get(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips and labels at `indices`."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self.videos[idx], self.labels[idx]

    def info(self) -> dict[str, Any]:
        """Provenance including how the clips were made."""
        return {**super().info(), **self.details}


EMBEDDED_CLIPS_PER_PHOTO = {"train": 11, "eval": 6}  # + one clip of the bundled GIF: 100 train, 55 eval
EMBEDDED_FPS = 8  # frame rate written into the embedded mp4 files
EMBEDDED_CRF = 12  # libx264 quality of the embedded mp4 files (lower is better)
EMBEDDED_VERSION = 1  # bump when the clip recipe changes (invalidates the cache)
GIF_NAME = "no_time_for_that_tiny.gif"  # 24-frame GIF bundled with scikit-image


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int = EMBEDDED_FPS, crf: int = EMBEDDED_CRF) -> Path:
    """Write uint8 (T, H, W, 3) frames as H.264 yuv420p mp4 through PyAV, atomically (temp file + os.replace)."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] % 2 or \
            frames.shape[2] % 2:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) with even H and W (yuv420p), got {frames.dtype} "
                         f"{frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            stream.options = {"crf": str(crf), "threads": "1"}  # one thread: byte-identical output
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            container.mux(stream.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _pan_zoom(region: np.ndarray, rng: np.random.Generator, num_frames: int, resolution: int) -> np.ndarray:
    """Frames (T, 2·res, 2·res, 3) of a square window moving and zooming linearly between two random boxes."""
    from PIL import Image

    h, w = region.shape[:2]
    size = rng.uniform(resolution, 2 * resolution, 2)  # window side at the first and last frame
    cy = [rng.uniform(s / 2, h - s / 2) for s in size]
    cx = [rng.uniform(s / 2, w - s / 2) for s in size]
    img, out = Image.fromarray(region), []
    for t in np.linspace(0.0, 1.0, num_frames):
        s, y, x = [(1 - t) * a[0] + t * a[1] for a in (size, cy, cx)]
        box = (x - s / 2, y - s / 2, x + s / 2, y + s / 2)
        out.append(np.asarray(img.resize((2 * resolution,) * 2, Image.BILINEAR, box=box)))
    return np.stack(out)


def _gif_frames(half: int, resolution: int) -> np.ndarray | None:
    """One half (12 frames) of scikit-image's bundled GIF, short side 2·res (even sizes), or None if absent."""
    import skimage.data
    from PIL import Image, ImageSequence

    path = Path(getattr(skimage.data, "data_dir", Path(skimage.data.__file__).parent)) / GIF_NAME
    if not path.is_file():
        return None
    with Image.open(path) as gif:
        frames = [f.convert("RGB") for f in ImageSequence.Iterator(gif)]
    frames = frames[:len(frames) // 2] if half == 0 else frames[len(frames) // 2:]
    w, h = frames[0].size
    scale = 2 * resolution / min(w, h)
    size = (2 * round(w * scale / 2), 2 * round(h * scale / 2))
    return np.stack([np.asarray(f.resize(size, Image.BICUBIC)) for f in frames])


def _cache_dir(split: str, num_frames: int, resolution: int) -> Path:
    import hashlib

    import av

    from ulbench.data.embedded import PHOTOS

    recipe = {"version": EMBEDDED_VERSION, "split": split, "num_frames": num_frames, "resolution": resolution,
              "photos": PHOTOS, "clips": EMBEDDED_CLIPS_PER_PHOTO[split], "fps": EMBEDDED_FPS, "crf": EMBEDDED_CRF,
              "av": av.__version__}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(os.environ.get("ULBENCH_CACHE") or Path.home() / ".cache" / "ulbench") / "videos"
    return root / f"embedded-{split}-{resolution}px-{num_frames}f-{key}"


def _write_embedded(folder: Path, split: str, num_frames: int, resolution: int) -> dict[str, Any]:
    """Render and write every clip of one split; the manifest is written last (its presence = complete)."""
    from PIL import Image

    from ulbench.data.embedded import EVAL_FRACTION, PHOTOS, _source
    from ulbench.results import atomic_write_text

    files, labels, sources = [], [], []
    for label, name in enumerate(PHOTOS):
        img = _source(name)
        scale = 8 * resolution / min(img.shape[:2])
        img = np.asarray(Image.fromarray(img).resize((round(img.shape[1] * scale), round(img.shape[0] * scale)),
                                                     Image.BOX))
        cut = int(round(img.shape[1] * (1 - EVAL_FRACTION)))
        region = img[:, :cut] if split == "train" else img[:, cut:]
        for k in range(EMBEDDED_CLIPS_PER_PHOTO[split]):
            rng = np.random.default_rng([EMBEDDED_VERSION, label, k, split == "eval"])
            files.append(write_mp4(folder / f"{len(files):04d}_{name}.mp4", _pan_zoom(region, rng, num_frames,
                                                                                       resolution)).name)
            labels.append(label)
            sources.append(name)
    gif = _gif_frames(0 if split == "train" else 1, resolution)
    if gif is not None:
        files.append(write_mp4(folder / f"{len(files):04d}_gif.mp4", gif).name)
        labels.append(len(PHOTOS))
        sources.append(GIF_NAME)
    manifest = {"files": files, "labels": labels, "sources": sources, "gif": "included" if gif is not None else
                f"{GIF_NAME} is not bundled with this scikit-image: skipped", "num_classes": len(PHOTOS) + 1}
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


_EMBEDDED: dict[tuple[str, int, int], VideoTensorDataset] = {}


def embedded_videos(split: str = "train", num_frames: int = 16, resolution: int = 32, **_: Any) -> VideoTensorDataset:
    """Clips panning and zooming across scikit-image's photographs (train/eval from disjoint regions, as the
    embedded images) plus its bundled GIF, written as mp4 with PyAV and read back through `read_clip`."""
    split = {"val": "eval", "test": "eval"}.get(split, split)
    if split not in EMBEDDED_CLIPS_PER_PHOTO:
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    num_frames = _check_positive_int("num_frames", num_frames)
    resolution = _check_positive_int("resolution", resolution, 8)
    if resolution % 2:
        raise ValueError(f"resolution must be even (H.264 yuv420p), got {resolution}")
    key = (split, num_frames, resolution)
    if key not in _EMBEDDED:
        folder = _cache_dir(*key)
        manifest = None
        if (folder / "manifest.json").is_file():
            manifest = json.loads((folder / "manifest.json").read_text())
            if not all((folder / f).is_file() for f in manifest["files"]):
                manifest = None
        if manifest is None:
            manifest = _write_embedded(folder, *key)
        clips = [read_clip(folder / f, num_frames, 1, resolution, start=0) for f in manifest["files"]]
        details = {"sources": sorted(set(manifest["sources"]), key=manifest["sources"].index),
                   "gif": manifest["gif"], "fps": EMBEDDED_FPS, "cache": str(folder),
                   "preprocess": f"pan/zoom windows of res..2*res px rendered at 2*res, H.264 crf {EMBEDDED_CRF} "
                                 f"yuv420p, decoded with decord, antialiased resize to {resolution}"}
        _EMBEDDED[key] = VideoTensorDataset(torch.stack(clips), torch.tensor(manifest["labels"]), "video-embedded",
                                            split, manifest["num_classes"], details)
    return _EMBEDDED[key]
