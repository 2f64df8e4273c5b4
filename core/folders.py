"""Model folders on disk: the one atomic writer, what counts as ours, what is refused on load.

Every folder Sentence Lab writes (a saved model, each export) goes through ``write_folder``:
it is filled beside its destination and renamed into place only when complete. A folder is ours
to replace only when it holds nothing but files this project wrote: ``is_ours`` recognises it, and
every path in it is listed in the ``sentence_lab_files.json`` that the writer leaves there (``--out
~`` must never wipe a home, nor a model folder with the user's notes added to it). Loading refuses
folders that hold pickle files or symbolic links, and reads only JSON and safetensors. Head tensors are named ``<part>.<parameter>`` (``classifier.linear.weight``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .errors import ConfigError, FolderExistsError, ModelFolderError, NotWritableError

# Weight formats that can carry pickled Python objects, i.e. code that runs on load. A folder holding
# one is refused outright, even beside safetensors: it is not what we saved, so it may be tampered with.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill", ".npy", ".npz"})
MAX_JSON_BYTES = 10_000_000  # a config is a few KB; a hostile one must not make us parse gigabytes
# Every path write_folder wrote, folders ending in "/": what a later save may replace, and nothing else.
MANIFEST_FILE = "sentence_lab_files.json"


# -- writing ------------------------------------------------------------------------------------------


@contextmanager
def write_folder(folder: str | os.PathLike, is_ours: Callable[[Path], bool]) -> Iterator[Path]:
    """Yield a temporary folder beside ``folder``; on success it replaces ``folder``, on failure it goes.

    Raises FolderExistsError before anything is written when ``folder`` is a file, or a non-empty
    folder that is not ours (check_replaceable); it is checked again just before the swap, so files
    added while the new folder was written are not lost either. The new folder lists what it holds
    in MANIFEST_FILE.
    """
    folder = Path(folder)
    check_target(folder, is_ours)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a saved model is an ordinary folder
    try:
        yield tmp
        write_manifest(tmp)
        check_replaceable(folder, is_ours)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_target(folder: str | os.PathLike, is_ours: Callable[[Path], bool]) -> None:
    """Everything about a place to save to that can be known before any work: call it before an hour of
    training, not after. Refuses an empty name, the root or current folder, a file, a foreign folder
    (check_replaceable) and a place this process cannot write in."""
    if not str(folder).strip():
        raise ConfigError("the folder to save to is empty: name one, e.g. --out my-model")
    path = Path(folder)
    resolved = path.resolve()
    if resolved == resolved.parent or resolved == Path.cwd().resolve():
        raise FolderExistsError(f"{folder} is {'the root folder' if resolved == resolved.parent else 'the current folder'}"
                                ": saving replaces the folder whole, so name a new folder inside it instead")
    check_replaceable(path, is_ours)
    # The model is written beside the folder, then swapped in: the nearest existing parent must take it.
    existing = next(p for p in resolved.parents if p.exists())  # the root always exists
    if not existing.is_dir():
        raise NotWritableError(f"cannot save to {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NotWritableError(f"cannot save to {folder}: no permission to write in {existing}")


def check_replaceable(folder: Path, is_ours: Callable[[Path], bool]) -> None:
    """Saving replaces ``folder`` whole: allowed only for a missing or empty folder, or one that ``is_ours``
    recognises and that holds nothing but the paths its MANIFEST_FILE lists (some may be gone)."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise FolderExistsError(f"{folder} exists and is not a folder: choose another place to save to")
    if not any(folder.iterdir()):
        return
    if not is_ours(folder):
        raise FolderExistsError(f"{folder} exists and is not a saved Sentence Lab model: refusing to replace it "
                                f"(choose a new or empty folder)")
    manifest = folder / MANIFEST_FILE
    if not manifest.exists() and not manifest.is_symlink():
        raise FolderExistsError(f"{folder} does not list the files Sentence Lab wrote there (saves from earlier versions "
                                f"have no {MANIFEST_FILE}), so yours cannot be told from ours: refusing to replace it; "
                                "choose a new or empty folder (or delete this one yourself if nothing in it is yours)")
    written = read_manifest(folder)
    if written is None:
        raise FolderExistsError(f"{folder} does not list the files Sentence Lab wrote there (its {MANIFEST_FILE} is not "
                                "such a list): refusing to replace it; choose a new or empty folder")
    try:
        foreign = foreign_paths(folder, written)
    except OSError as exc:
        raise FolderExistsError(f"{folder}: cannot read {exc.filename or 'a folder in it'} ({exc.strerror or exc}), so "
                                "yours cannot be told from ours: refusing to replace it; choose a new or empty folder") from None
    if foreign:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise FolderExistsError(f"{folder} holds files Sentence Lab did not write ({', '.join(foreign[:5])}{more}): "
                                "refusing to replace it; choose a new or empty folder or move them out")


def list_paths(folder: Path, enter: Callable[[str], bool] = lambda name: True) -> Iterator[tuple[str, Path]]:
    """Every path under ``folder`` as (relative name, path), folders named "name/". Links are never
    followed (a link is named as a file); a folder for which ``enter(name)`` is False is named but not
    walked into. A folder that cannot be read is an OSError, not a silent gap."""
    def fail(exc: OSError) -> None:
        raise exc

    for root, dirs, files in os.walk(folder, onerror=fail):  # top-down: ``dirs`` may be pruned below
        base = Path(root)
        for name in sorted(dirs + files):
            path = base / name
            relative = path.relative_to(folder).as_posix()
            yield (relative + "/" if name in dirs and not path.is_symlink() else relative), path
        dirs[:] = sorted(d for d in dirs if enter((base / d).relative_to(folder).as_posix() + "/"))


def write_manifest(folder: Path) -> None:
    """List every path in ``folder`` in its MANIFEST_FILE: what a later save may replace."""
    files = sorted(name for name, _ in list_paths(folder) if name != MANIFEST_FILE)
    write_json(folder / MANIFEST_FILE, {
        "about": "Every file and folder Sentence Lab wrote here. Saving to this folder again replaces it whole, "
                 "so Sentence Lab does that only while it holds nothing else: files of yours are never deleted.",
        "files": files,
    })


def read_manifest(folder: Path) -> set[str] | None:
    """The paths ``folder``'s MANIFEST_FILE lists; None when it is a link, huge, or not such a list."""
    path = folder / MANIFEST_FILE
    try:
        if path.is_symlink() or path.stat().st_size > MAX_JSON_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return set(files)


def foreign_paths(folder: Path, written: set[str]) -> list[str]:
    """The paths in ``folder`` that ``written`` does not list (a link is never ours), sorted; a folder
    we did not write is named once ("src/"), not file by file."""
    foreign: list[str] = []
    for name, path in list_paths(folder, enter=lambda name: name in written):
        if name != MANIFEST_FILE and (path.is_symlink() or name not in written):
            foreign.append(name)
    return sorted(foreign)


def replace_folder(new: Path, dest: Path) -> None:
    """Move ``new`` to ``dest``; an existing ``dest`` is swapped out only once ``new`` is complete."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(new, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, dest)


def write_json(path: Path, value: Any) -> None:
    """Indented JSON (numpy numbers and paths as plain values), its folder made if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def has_json(folder: Path, name: str, **expected: Any) -> bool:
    """Whether ``folder/name`` is a JSON object with the ``expected`` values (recognises our folders)."""
    try:
        data = json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and all(data.get(k) == v for k, v in expected.items())


# -- tensors ------------------------------------------------------------------------------------------


def flatten(parts: Mapping[str, nn.Module | None]) -> dict[str, Tensor]:
    """The state of each present part under its name: {"classifier.linear.weight": (C, D), ...}, on the CPU."""
    return {f"{name}.{key}": value.detach().cpu().contiguous()
            for name, module in parts.items() if module is not None
            for key, value in module.state_dict().items()}


def save_tensors(tensors: Mapping[str, Tensor], path: Path) -> None:
    save_file(dict(tensors), str(path))


def read_tensors(path: Path) -> dict[str, Tensor]:
    """A safetensors file (never a pickle); a broken one is a ModelFolderError."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFolderError(f"{path} is not a readable safetensors file ({exc})") from None


def load_parts(path: Path, tensors: Mapping[str, Tensor], parts: Mapping[str, nn.Module | None], config_name: str) -> None:
    """Load ``tensors`` into ``parts`` after checking names, shapes and values against what they need."""
    expected = flatten(parts)
    problems = [f"{k} is missing" for k in sorted(set(expected) - set(tensors))]
    problems += [f"{k} is not part of this model" for k in sorted(set(tensors) - set(expected))]
    for name in sorted(set(expected) & set(tensors)):
        tensor, want = tensors[name], expected[name]
        if tensor.shape != want.shape:
            problems.append(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(want.shape)}")
        elif not tensor.is_floating_point():
            problems.append(f"{name} holds {tensor.dtype}, expected floating-point weights")
        elif not torch.isfinite(tensor).all():
            problems.append(f"{name} holds NaN or infinite values")
    if problems:
        raise ModelFolderError(f"{path} does not match {config_name} (edited, or from another model?): "
                               + "; ".join(problems[:5]))
    for name, module in parts.items():
        if module is not None:
            module.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})


# -- reading ------------------------------------------------------------------------------------------


def read_json(path: Path, what: str) -> Any:
    """A JSON file of ours, refused when it is a link, huge, or not JSON."""
    if path.is_symlink():
        raise ModelFolderError(f"{path} is a symbolic link; a model folder must hold its own files")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ModelFolderError(f"{path} is {path.stat().st_size:,} bytes; a {what} is a few KB")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ModelFolderError(f"{path} is not valid JSON: {reason}") from None


def check_files(folder: Path) -> None:
    """Refuse a folder holding pickle-format files or symbolic links, anywhere inside it."""
    pickles, links = [], []
    for root, dirs, files in os.walk(folder):  # does not follow links to folders
        for name in dirs + files:
            path = Path(root) / name
            relative = str(path.relative_to(folder))
            if path.is_symlink():
                links.append(relative)
            elif name in files and path.suffix.lower() in PICKLE_SUFFIXES:
                pickles.append(relative)
    if pickles:
        raise ModelFolderError(
            f"{folder}: refusing to load a folder with pickle files ({', '.join(sorted(pickles)[:5])}): they can run "
            "code when opened. Sentence Lab loads only safetensors and JSON; remove them or save the weights as safetensors")
    if links:
        raise ModelFolderError(f"{folder}: refusing to follow symbolic links ({', '.join(sorted(links)[:5])}); "
                               "a model folder must hold its own files")


def extract_zip(archive: str | os.PathLike, dest: Path, *, max_bytes: int, max_files: int = 64) -> Path:
    """Unpack a model zip someone sent into the empty folder ``dest``, refusing what could harm us: names
    that leave ``dest`` (absolute, ``..``), links, more than ``max_files`` entries, or more than ``max_bytes``
    once unpacked (counted as the bytes come out, not trusted from the zip's own header). Returns the folder
    inside that holds ``config.json``: ``dest`` itself or its one top-level folder (as our downloads are made).
    """
    name = Path(archive).name
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > max_files:
                raise ModelFolderError(f"{name}: {len(members)} entries; a model zip has a handful (at most {max_files})")
            written = 0
            for info in members:
                parts = Path(info.filename).parts
                if info.filename.startswith(("/", "\\")) or ".." in parts or ":" in info.filename:
                    raise ModelFolderError(f"{name}: the entry {info.filename!r} points outside the model's folder")
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise ModelFolderError(f"{name}: the entry {info.filename!r} is a link; a model zip holds files only")
                target = dest.joinpath(*parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "xb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ModelFolderError(f"{name}: over {max_bytes / 2**20:.0f} MB once unpacked, more than "
                                                   "this server takes for a model")
                        out.write(chunk)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, FileExistsError) as exc:  # FileExistsError: a name twice
        raise ModelFolderError(f"{name}: not a zip file that can be read ({exc})") from None
    if (dest / "config.json").is_file():
        return dest
    inside = [p for p in dest.iterdir()]
    if len(inside) == 1 and (inside[0] / "config.json").is_file():
        return inside[0]
    raise ModelFolderError(f"{name}: no config.json at its top or in its one folder; is it a Sentence Lab model zip "
                           "(the Train tab's Download, or python -m core train --out)?")
