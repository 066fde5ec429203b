"""Shared helpers for the installer tests: small valid and invalid policies, file inspection."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kaudit.policy import content_hash


def policy_text(level: str = "Metadata", padding: int = 0) -> str:
    """A valid audit.k8s.io/v1 policy; ``padding`` adds comment lines to make the file larger."""
    comment = "".join(f"# padding line {i:06d} keeps this file large enough to be written in pieces\n"
                      for i in range(padding))
    return f"apiVersion: audit.k8s.io/v1\nkind: Policy\n{comment}rules:\n- level: {level}\n"


# An unknown level is refused by kube-apiserver's validation (validation.go: supported levels).
INVALID_POLICY = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n"
# Zero rules are refused at load (facts 10).
EMPTY_POLICY = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n"


def digest(text: str) -> str:
    return content_hash(text)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def leftovers(directory: Path, name: str) -> list[str]:
    """Temporary files the writer left beside ``name``."""
    return sorted(n for n in os.listdir(directory) if n.startswith(f".{name}.") and n.endswith(".kaudit-tmp"))
