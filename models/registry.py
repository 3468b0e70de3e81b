"""The model registry: one JSON file of entries (spec §6.2) beside the artifacts.

`registry.json` is a list of entries with exactly the spec's keys:
`model_id`, `version`, `sha256`, `created`, `metrics`, `approved`, `stage`.
A version's artifact is `<model_id>-<version>.onnx` in the same folder.
A new version is registered as `stage: staging, approved: false`; only
`promote --approve` (a person's sign-off) makes it `prod`, and the version
that was `prod` becomes `archived`. Writes go through a temporary file and a
rename, so a reader never sees half a registry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILE_NAME = "registry.json"
STAGES = ("staging", "prod", "archived")
SHIPPED = Path(__file__).parent  # the default model this package ships


class RegistryError(Exception):
    """A registry or artifact problem, said in one line for the operator."""


@dataclass(frozen=True)
class Entry:
    model_id: str
    version: str
    sha256: str
    created: str
    metrics: dict[str, float] = field(default_factory=dict)
    approved: bool = False
    stage: str = "staging"

    @property
    def ref(self) -> str:
        return f"{self.model_id}@{self.version}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Registry:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / FILE_NAME

    def artifact(self, entry: Entry) -> Path:
        return self.folder / f"{entry.model_id}-{entry.version}.onnx"

    def entries(self) -> list[Entry]:
        if not self.path.exists():
            return []
        try:
            raw = json.loads(self.path.read_text())
            return [Entry(**item) for item in raw]
        except (ValueError, TypeError) as exc:
            raise RegistryError(f"{self.path}: not a model registry ({exc})") from exc

    def _write(self, entries: list[Entry]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps([asdict(e) for e in entries], indent=2) + "\n")
        os.replace(tmp, self.path)

    def next_version(self, model_id: str) -> str:
        patches = [int(e.version.rsplit(".", 1)[-1]) for e in self.entries()
                   if e.model_id == model_id and e.version.count(".") == 2]  # fmt: skip
        return f"1.0.{max(patches, default=-1) + 1}"

    def register(self, model_id: str, artifact: Path, metrics: dict[str, float]) -> Entry:
        """Add a trained artifact as a new staging version (the file is moved in)."""
        version = self.next_version(model_id)
        created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        entry = Entry(model_id, version, sha256_of(artifact), created, metrics)
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.move(str(artifact), self.artifact(entry))
        self.artifact(entry).chmod(0o644)
        self._write([*self.entries(), entry])
        return entry

    def find(self, ref: str) -> Entry:
        """`model_id@version`, or a version of the only model."""
        model_id, _, version = ref.rpartition("@")
        found = [e for e in self.entries()
                 if e.version == version and (not model_id or e.model_id == model_id)]  # fmt: skip
        if len(found) != 1:
            raise RegistryError(f"no single model {ref!r} in {self.path}")
        return found[0]

    def promote(self, ref: str, approve: bool) -> Entry:
        """Make a version prod; refused without the operator's approval."""
        if not approve:
            raise RegistryError("promotion to prod needs a person's sign-off: add --approve")
        target = self.find(ref)
        problem = self.check(target)
        if problem:
            raise RegistryError(f"{target.ref} cannot be promoted: {problem}")
        out = []
        for e in self.entries():
            if e == target:
                e = Entry(**{**asdict(e), "approved": True, "stage": "prod"})
                target = e
            elif e.model_id == target.model_id and e.stage == "prod":
                e = Entry(**{**asdict(e), "stage": "archived"})
            out.append(e)
        self._write(out)
        return target

    def check(self, entry: Entry) -> str | None:
        """Why an entry's artifact cannot be trusted, or None."""
        path = self.artifact(entry)
        if not path.exists():
            return f"artifact {path} is missing"
        actual = sha256_of(path)
        if actual != entry.sha256:
            return (f"artifact {path} has sha256 {actual[:12]}..., "
                    f"the registry says {entry.sha256[:12]}...")  # fmt: skip
        return None

    def serving(self, model_id: str) -> Entry | None:
        """The version the proxy may serve: prod and approved (its artifact unchecked)."""
        found = [e for e in self.entries()
                 if e.model_id == model_id and e.stage == "prod" and e.approved]  # fmt: skip
        return found[-1] if found else None

    def seed_from(self, shipped: Path) -> bool:
        """Copy the shipped registry and artifacts into an empty registry folder."""
        if self.path.exists() or not (shipped / FILE_NAME).exists():
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        source = Registry(shipped)
        for entry in source.entries():
            shutil.copyfile(source.artifact(entry), self.artifact(entry))
        shutil.copyfile(source.path, self.path)
        return True

    def as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.entries()]
