"""Versioned prompt templates (`harness/judges/templates/<id>.txt`; provenance in templates/README.md)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
_PLACEHOLDER = re.compile(r"<([a-z_]+)>")


@dataclass(frozen=True)
class Template:
    id: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(_PLACEHOLDER.findall(self.text))

    def render(self, **fields: str) -> str:
        """The prompt with every placeholder filled, in one pass (a sample's text that happens to contain
        `<subject>` is inserted as is, never substituted again). Missing or unknown fields are errors."""
        missing, unknown = self.placeholders - set(fields), set(fields) - self.placeholders
        if missing or unknown:
            raise ValueError(f"template {self.id}: missing field(s) {sorted(missing)}, unknown field(s) {sorted(unknown)}")
        return _PLACEHOLDER.sub(lambda m: fields[m.group(1)] if m.group(1) in fields else m.group(0), self.text)


@lru_cache(maxsize=None)
def load_template(template_id: str) -> Template:
    path = TEMPLATE_DIR / f"{template_id}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in TEMPLATE_DIR.glob("*.txt"))
        raise ValueError(f"unknown judge template {template_id!r} (no {path}); known: {', '.join(known)}")
    return Template(template_id, path.read_text(encoding="utf-8"))
