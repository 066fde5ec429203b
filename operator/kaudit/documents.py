"""Reading a user's YAML or JSON file: the one place for the limits every command shares.

Every command that reads a policy, an AuditCollection or a live agent object reads it here, so
the same input gets the same answer everywhere (docs/cli.md writes the contract down):

* the size is bounded before anything is parsed: at most :data:`MAX_BYTES` are read, from a file
  or from standard input, so a huge or endless input costs nothing;
* binary data (not UTF-8, or with a NUL byte) is named as such, never decoded half-way;
* the nesting depth is bounded on the parser's event stream before any document is composed
  (libyaml recurses per level while composing and crashes the interpreter on very deep input);
* every error carries the file and, where the parser knows it, the line and column.

Log files (``policy eval``, ``policy simulate``) are streamed line by line instead, and are not
read here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Iterable

import yaml

from kaudit.errors import FieldError, InvalidInput

MAX_BYTES = 4 * 1024 * 1024  # far above any Kubernetes object (etcd refuses requests over 1.5 MiB)
# Detection-rule files (Datadog API or Terraform JSON, `kaudit rules check --rules`) export many rules at once.
MAX_RULE_FILE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64  # a policy nests 5 levels deep, a DaemonSet about 12; deeper input is not ours
STDIN = "-"
STDIN_NAME = "<stdin>"


class DocumentError(ValueError):
    """Input that is not a usable YAML/JSON text; ``line``/``column`` are 1-based, 0 when unknown."""

    def __init__(self, message: str, line: int = 0, column: int = 0):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column

    def field_error(self, file: str = "") -> FieldError:
        return FieldError("", self.message, file=file, line=self.line, column=self.column)


@dataclass
class Document:
    """One parsed document and what the parse saw: where each key is, and keys given twice."""

    data: Any
    # Path of every mapping key ("spec.agent.mode", "rules[2].level") → (line, column), 1-based.
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)
    # (path, line, column) of the second and later occurrence of a key in the same mapping.
    duplicates: list[tuple[str, int, int]] = field(default_factory=list)

    def locate(self, error: FieldError, file: str = "") -> FieldError:
        """``error`` with the file and the position of its field (or of its nearest parent)."""
        path = error.path
        while path and path not in self.positions:
            path = _parent(path)
        line, column = self.positions.get(path, (0, 0)) if path else (0, 0)
        if error.line:
            line, column = error.line, error.column
        return FieldError(error.path, error.message, file=error.file or file, line=line, column=column)

    def duplicate_errors(self, file: str = "") -> list[FieldError]:
        """One error per key given twice: YAML decoders keep the last value silently."""
        return [FieldError(path, f'duplicate field "{_last_key(path)}": only the last one would count; remove one',
                           file=file, line=line, column=column)
                for path, line, column in self.duplicates]


def _parent(path: str) -> str:
    if path.endswith("]"):
        return path[:path.rindex("[")]
    return path.rpartition(".")[0]


def _last_key(path: str) -> str:
    return path.rpartition(".")[2]


def display_name(path: str) -> str:
    return STDIN_NAME if path == STDIN else path


def read_bytes(path: str, *, limit: int = MAX_BYTES) -> bytes:
    """The bytes of ``path`` (``-``: standard input), refused past ``limit`` before parsing.

    Raises :class:`InvalidInput` naming the file for a missing path, a directory, a file that
    cannot be read, and input over the limit (only ``limit + 1`` bytes are ever read).
    """
    name = display_name(path)
    try:
        if path == STDIN:
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(limit + 1)
    except OSError as exc:
        raise InvalidInput([FieldError("", os_error_message(exc), file=name)]) from None
    except (AttributeError, ValueError):  # no standard input at all (closed, or not a byte stream)
        raise InvalidInput([FieldError("", "cannot read: standard input is closed", file=name)]) from None
    if len(data) > limit:
        raise InvalidInput([FieldError("", too_large_message(limit), file=name)])
    return data


def os_error_message(exc: OSError) -> str:
    """Why a file could not be opened or read, in the same words for every command."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"cannot read: {exc.strerror or exc}"


def too_large_message(limit: int = MAX_BYTES) -> str:
    return f"too large: over the {limit >> 20} MiB limit for one YAML or JSON file"


def decode(data: bytes | str) -> str:
    """``data`` as text; raises :class:`DocumentError` for binary data or text over the limit."""
    if isinstance(data, bytes):
        if len(data) > MAX_BYTES:
            raise DocumentError(too_large_message())
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DocumentError(f"binary data, not a YAML or JSON text (not UTF-8 at byte {exc.start})") from None
    elif len(data) > MAX_BYTES:
        raise DocumentError(too_large_message())
    if "\x00" in data:
        raise DocumentError(f"binary data, not a YAML or JSON text (NUL byte at offset {data.index(chr(0))})")
    return data.removeprefix("\ufeff")  # a byte-order mark some editors write


def check_stdin_once(options: Iterable[tuple[str, str | None]]) -> None:
    """Refuse ``-`` for more than one input: standard input can be read only once.

    ``options`` are (option name, value) pairs in command-line order; the error names the second.
    """
    first = None
    for option, value in options:
        if value != STDIN:
            continue
        if first == option:
            raise InvalidInput([FieldError(option, "standard input ('-') is given twice; it can be read only once")])
        if first is not None:
            raise InvalidInput([FieldError(option, f"standard input ('-') is already read by {first}; "
                                                   "give it to one option only")])
        first = option


def yaml_loader() -> type:
    """The YAML loader every document goes through: libyaml when present, without timestamps."""
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc,valid-type]
        pass

    # Go's YAML decoder hands dates to a string field as text; PyYAML would make datetimes.
    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return Loader


def parse(data: bytes | str, *, first_only: bool = False) -> list[Document]:
    """The documents of ``data`` (empty ones left out), each with positions and duplicate keys.

    ``first_only`` stops after the first document, as kube-apiserver does with a policy file.
    Raises :class:`DocumentError` with a one-line message (and the position when known).
    """
    text = decode(data)
    loader_class = yaml_loader()
    try:
        check_nesting(text, loader_class, every_document=not first_only)
        loader = loader_class(text)
        try:
            documents = []
            while loader.check_node():
                node = loader.get_node()
                if node is None:
                    break
                document = Document(None)
                _walk(node, "", set(), document)
                document.data = loader.construct_document(node)
                if document.data is not None:
                    documents.append(document)
                if first_only:
                    break
            return documents
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed"
        raise DocumentError(f"not valid YAML: {problem}", *((mark.line + 1, mark.column + 1) if mark else ())) from None
    except yaml.YAMLError as exc:
        raise DocumentError(f"not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise DocumentError(_too_deep()) from None


def load(path: str, *, first_only: bool = False) -> list[Document]:
    """:func:`read_bytes` then :func:`parse`; every problem an :class:`InvalidInput` naming the file."""
    data = read_bytes(path)
    try:
        return parse(data, first_only=first_only)
    except DocumentError as exc:
        raise InvalidInput([exc.field_error(display_name(path))]) from None


def _walk(node: Any, path: str, visited: set[int], document: Document) -> None:
    """Record the position of every key and the keys that occur twice in one mapping.

    A node reached again through an alias is not walked again (alias bombs stay linear).
    """
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            child = f"{path}.{key}" if path else str(key)
            if key is not None:
                where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if key in seen:
                    document.duplicates.append((child, *where))
                else:
                    document.positions.setdefault(child, where)
                seen.add(key)
            _walk(value_node, child, visited, document)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = f"{path}[{i}]"
            document.positions.setdefault(child, (item.start_mark.line + 1, item.start_mark.column + 1))
            _walk(item, child, visited, document)


def _too_deep() -> str:
    return f"nested too deeply (more than {MAX_DEPTH} levels)"


def check_nesting(text: str, loader: type, *, every_document: bool = False) -> None:
    """Walk the parser's events of the first document (or of all) and refuse deep nesting.

    libyaml's composer recurses per nesting level and crashes the interpreter (a segmentation
    fault, not an exception) on very deep input, so the depth is checked on the (iterative)
    event stream before composing. Raises :class:`DocumentError`; the parser's own YAMLError for
    malformed input passes through.
    """
    depth = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    line, column = (mark.line, mark.column) if mark is not None else (0, 0)
                    raise DocumentError(_too_deep(), line + 1, column + 1)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.DocumentEndEvent) and not every_document:
                return
    except yaml.MarkedYAMLError as exc:
        # The scanner reads flow collections ahead of the events, and some libyaml builds stop at
        # their own nesting limit there: judge the depth at the failure point by kaudit's limit, so
        # the error is the same whatever PyYAML a machine has.
        mark = exc.problem_mark
        if mark is not None and _flow_depth(text, mark.index) > MAX_DEPTH:
            raise DocumentError(_too_deep(), mark.line + 1, mark.column + 1) from None
        raise


def _flow_depth(text: str, end: int) -> int:
    """The deepest flow-collection nesting (``[``/``{``) in ``text[:end]``, outside quotes and comments."""
    depth = deepest = 0
    quote = ""
    comment = False
    previous = "\n"
    for char in text[:end]:
        if comment:
            comment = char != "\n"
        elif quote:
            if char == quote and not (quote == '"' and previous == "\\"):
                quote = ""
        elif char in "\"'" and previous in " \t\n[{,:":
            quote = char
        elif char == "#" and previous in " \t\n":
            comment = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
        previous = char
    return deepest


# --- the wrong kind of document ----------------------------------------------------------------

# What kaudit reads, by kind: (apiVersion as written, what it is, the command for it).
KNOWN_KINDS = {
    "AuditCollection": ("kaudit.dev/v1alpha1", "an AuditCollection",
                        "'kaudit render -f FILE' prints the audit policy it makes"),
    "Policy": ("audit.k8s.io/v1", "an audit Policy",
               "'kaudit policy validate FILE' checks it; put its rules in spec.policy.rules to use them here"),
    "Event": ("audit.k8s.io/v1", "an audit Event", "'kaudit policy eval --events FILE' reads audit events"),
}


def wrong_kind(data: Any, expected: str) -> FieldError | None:
    """An error saying what the document is when it names a kind other than ``expected``.

    None when the document is of the expected kind or names no kind (the caller's own checks then
    say what is missing). An audit.k8s.io document of kind ``Policy`` counts as a Policy whatever
    its version, so an old version gets the caller's message about versions.
    """
    if not isinstance(data, dict) or data.get("kind") == expected:
        return None
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        return None
    expected_version, expected_what, _ = KNOWN_KINDS[expected]
    known = KNOWN_KINDS.get(kind)
    if known is not None:
        what, hint = known[1], f"; {known[2]}"
    else:
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        what, hint = f"{article} {kind}", ""
    shown = f" ({api_version})" if isinstance(api_version, str) and api_version else ""
    return FieldError("kind", f"this is {what}{shown}, not {expected_what} ({expected_version}){hint}")
