"""Run specs: the frozen description of one cached step, hashed whole.

A spec is a kind (world, annotator, labelmaps, train, eval) and a body of plain JSON values. Its hash is that of
the whole body plus the kind's version, and a step's `compute` receives only the spec, so nothing that changes a
result can be left out of the key. A spec that depends on another run holds that run's spec whole (`as_json`),
so the dependency is part of the key too. Inputs from outside the run cache (the released label maps, a user's
checkpoint) enter a spec by a content digest (`file_digest`, `tree_digest`).
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping

# Bumped when a kind's compute changes what it produces for the same body: the old runs stay, unreachable.
VERSIONS = {"world": "world/v1", "annotator": "annotator/v2", "labelmaps": "labelmaps/v2", "train": "train/v2",
            "eval": "eval/v1", "evalset": "evalset/v1", "detector": "detector/v1"}

# Options added to a config section after the embedded profiles' runs were cached, with the value that reproduces
# those runs. A spec leaves such an option out while it holds that value, so the cached runs keep their hashes, and
# a step reads an absent option as that value (`added_option`).
ADDED_OPTIONS = {"train": {"decay_norm_and_bias": False, "lighting": 0.0, "warmup_prefix": False,
                           "iterations": None, "decay_ends_with_training": False},
                 "supervision": {"cutmix_pairing": "reversed", "clean_list": None},
                 "data": {"val_labels": None, "skip_unreadable": False, "task": None, "multilabel": False}}


def without_former_defaults(section: str, values: Mapping) -> dict:
    """A config section as it enters a spec: its added options that hold their former behaviour left out."""
    added = ADDED_OPTIONS.get(section, {})
    return {key: value for key, value in values.items() if key not in added or value != added[key]}


def added_option(values: Mapping, section: str, key: str) -> Any:
    """An added option of a spec's section (`ADDED_OPTIONS`); absent, its former behaviour."""
    return values.get(key, ADDED_OPTIONS[section][key])


def digest_path(value: Any) -> Any:
    """The path inside a file's digest (`file_digest`), or the value itself where it is not one."""
    return value["path"] if isinstance(value, Mapping) and "path" in value else value


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


class Spec:
    """Immutable: the body is kept as canonical JSON and handed out as a fresh copy on every read."""

    __slots__ = ("kind", "_text", "hash")

    def __init__(self, kind: str, body: Mapping):
        if kind not in VERSIONS:
            raise ValueError(f"unknown run kind {kind!r}: one of {', '.join(VERSIONS)}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "_text", canonical_json(dict(body)))
        digest = hashlib.sha256(canonical_json(self.as_json()).encode()).hexdigest()[:16]
        object.__setattr__(self, "hash", digest)

    def __setattr__(self, name, value):
        raise AttributeError("a Spec is immutable: build a new one")

    def __copy__(self) -> "Spec":
        return self

    def __deepcopy__(self, memo) -> "Spec":
        return self

    def __reduce__(self):
        return Spec, (self.kind, self.body)

    @property
    def version(self) -> str:
        return VERSIONS[self.kind]

    @property
    def body(self) -> dict:
        return json.loads(self._text)

    def __getitem__(self, key: str) -> Any:
        return self.body[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.body.get(key, default)

    def as_json(self) -> dict:
        """The form in which a spec is stored (spec.json) and nested inside another spec."""
        return {"kind": self.kind, "version": self.version, "spec": json.loads(self._text)}

    @classmethod
    def from_json(cls, data: Mapping) -> "Spec":
        spec = cls(data["kind"], data["spec"])
        if data.get("version") != spec.version:
            raise ValueError(f"a {data['kind']} spec of version {data.get('version')!r}; this code computes "
                             f"{spec.version}: rebuild it from the config")
        return spec

    def dependencies(self) -> list["Spec"]:
        """The specs nested in this one (the runs it needs first), outermost first, each once."""
        found: dict[str, Spec] = {}
        for nested in _nested_specs(self.body):
            spec = Spec.from_json(nested)
            found.setdefault(spec.hash, spec)
        return list(found.values())

    def __eq__(self, other) -> bool:
        return isinstance(other, Spec) and other.kind == self.kind and other._text == self._text

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        return f"Spec({self.kind}, {self.hash})"


def is_spec_json(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"kind", "version", "spec"}


def _nested_specs(value: Any) -> Iterator[Mapping]:
    if is_spec_json(value):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _nested_specs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _nested_specs(item)


def leaf_paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """The path (keys and list indices) of every leaf of a JSON value: what a hash test perturbs."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from leaf_paths(item, prefix + (key,))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from leaf_paths(item, prefix + (index,))
    else:
        yield prefix


def file_digest(path: str | os.PathLike, key: str) -> dict:
    """A user-supplied file (set by config `key`) named in a spec by its path, size and modification time:
    replacing its content in place gives a new digest without reading it. The path is made absolute: a run
    reads the file the spec names, whatever the working directory of its job."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{key} {path}: no such file: set {key} to an existing file")
    stat = Path(path).stat()
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@lru_cache(maxsize=None)
def _tree_digest(root: str) -> str:
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            stat = os.stat(path)
            digest.update(f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def tree_digest(root: str | os.PathLike) -> str:
    """A digest of every file's relative path, size and modification time under `root` (e.g. the 1.28M released
    label-map files: one stat each, no reads), computed once per process."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    return _tree_digest(str(root.resolve()))
