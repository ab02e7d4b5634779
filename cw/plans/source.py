"""Reading a plan file: its text within cw's limits, and YAML with the line of every value.

Both readers (:mod:`cw.plans.gsd`, :mod:`cw.plans.yamlplan`) read files and YAML through these
helpers, so that every problem becomes one ``FILE:LINE: FIELD: problem`` line.
"""

from __future__ import annotations

import functools
import logging
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cw.defaults import MAX_PLAN_FILE_BYTES
from cw.errors import PlanError
from cw.plans.spec import plan_error, show

logger = logging.getLogger(__name__)

#: How deep a libyaml that guards its C recursion lets YAML nest before it refuses.
_PROBE_DEPTH = 5_000
# Aliases let a few lines of YAML describe billions of nodes ("billion laughs"), or a loop.
_MAX_YAML_NODES = 200_000
_MERGE_TAG = "tag:yaml.org,2002:merge"

YamlPath = tuple[str | int, ...]


# --- reading files ------------------------------------------------------------------------


def read_plan_text(path: Path, display: str) -> str:
    """The text of a plan file, or a PlanError if it is missing, too big, binary or not UTF-8."""
    data = read_plan_bytes(path, display)
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise plan_error(display, line, "file", "binary data (NUL byte): a plan must be UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem = f"not UTF-8 text (invalid byte at offset {exc.start})"
        raise plan_error(display, line, "file", problem) from None
    return text.replace("\r\n", "\n")


def read_plan_bytes(path: Path, display: str) -> bytes:
    """The bytes of a plan file, or a PlanError if it is missing or too big (never read whole
    past the limit)."""
    size = _regular_file_size(path, display)
    if size > MAX_PLAN_FILE_BYTES:
        raise _too_big(display, size)
    try:
        with path.open("rb") as handle:
            # Read one byte past the limit: the file may have grown since stat().
            data = handle.read(MAX_PLAN_FILE_BYTES + 1)
    except PermissionError:
        raise plan_error(display, 1, "file", "cannot read: permission denied") from None
    except OSError as exc:
        raise plan_error(display, 1, "file", f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_PLAN_FILE_BYTES:
        raise _too_big(display, len(data))
    return data


def _regular_file_size(path: Path, display: str) -> int:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise plan_error(display, 1, "file", "no such file or directory") from None
    except OSError as exc:
        raise plan_error(display, 1, "file", f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise plan_error(display, 1, "file", "is a directory, expected a file")
    if not stat.S_ISREG(info.st_mode):
        raise plan_error(display, 1, "file", "not a regular file")
    return info.st_size


def _too_big(display: str, size: int) -> PlanError:
    problem = f"file is {size} bytes, over the limit of {MAX_PLAN_FILE_BYTES} bytes for a plan"
    return plan_error(display, 1, "file", problem)


# --- YAML with line numbers ---------------------------------------------------------------


@dataclass
class YamlDoc:
    """Plain YAML data (JSON types only) plus the line of every key and list item."""

    data: Any
    file: str
    lines: dict[YamlPath, int] = field(default_factory=dict)
    raw: dict[YamlPath, str] = field(default_factory=dict)

    def line(self, path: YamlPath) -> int:
        """The line of the node at ``path``, or of its nearest ancestor that has one."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)

    def text(self, path: YamlPath, value: object) -> str:
        """``value`` as the user spelled it: ``plan: 01`` gives "01", not "1"."""
        if isinstance(value, str):
            return value
        return self.raw.get(path, str(value))


def load_yaml(text: str, file: str, first_line: int = 1) -> YamlDoc:
    """Parse one YAML document; ``first_line`` is the file line the text starts on."""
    try:
        return _compose(text, file, first_line)
    except yaml.YAMLError as exc:
        exc = _pure_python_error(text, file, first_line) or exc
        line = _yaml_error_line(exc, text) + first_line - 1
        raise plan_error(file, line, "yaml", _yaml_problem(exc)) from None
    except RecursionError:
        problem = "nested too deeply (or an alias contains itself)"
        raise plan_error(file, first_line, "yaml", problem) from None


@functools.cache
def yaml_loader() -> type[yaml.SafeLoader]:
    """libyaml's loader where PyYAML has it and it limits nesting (its nodes keep their lines
    as the pure-Python loader's do, in a fraction of the time); the pure-Python loader
    otherwise. A libyaml without the limit recurses in C and crashes the process on deeply
    nested input ("[" * 100_000), where the pure-Python loader raises RecursionError."""
    loader: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)
    if loader is None:
        return yaml.SafeLoader
    probe = "[" * _PROBE_DEPTH + "]" * _PROBE_DEPTH
    try:
        yaml.compose(probe, Loader=loader)
    except yaml.YAMLError as exc:
        if "nesting depth" in str(exc):
            return loader
    logger.info("libyaml does not limit nesting: plans are parsed by pure-Python YAML")
    return yaml.SafeLoader


def _pure_python_error(text: str, file: str, first_line: int) -> yaml.YAMLError | None:
    """The pure-Python parser's account of a YAML error (it names the character or alias at
    fault where libyaml does not); None if it has nothing to add."""
    if yaml_loader() is yaml.SafeLoader:
        return None
    try:
        _compose(text, file, first_line, yaml.SafeLoader)
    except yaml.YAMLError as exc:
        return exc
    return None


def _compose(
    text: str, file: str, first_line: int, loader_class: type[yaml.SafeLoader] | None = None
) -> YamlDoc:
    loader = (loader_class or yaml_loader())(text)  # checks for unprintable characters already
    try:
        doc = YamlDoc(None, file, {(): first_line})
        node = loader.get_single_node()
        if node is not None:
            doc.lines[()] = node.start_mark.line + first_line
            doc.data = _Walker(loader, doc, first_line).value(node, ())
        return doc
    finally:
        loader.dispose()


def _yaml_error_line(exc: yaml.YAMLError, text: str) -> int:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return int(mark.line) + 1
    position = getattr(exc, "position", None)
    if isinstance(position, int):
        return text.count("\n", 0, position) + 1
    return 1


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [part for part in (exc.context, exc.problem) if part]
        if parts:
            return "YAML syntax error: " + ", ".join(parts)
    reason = getattr(exc, "reason", None)
    return f"YAML syntax error: {reason or exc}"


class _Walker:
    """Turns a composed YAML node graph into plain data, recording where each part came from."""

    def __init__(self, loader: yaml.SafeLoader, doc: YamlDoc, first_line: int) -> None:
        self.loader, self.doc, self.first_line = loader, doc, first_line
        self.count = 0
        self.checked: set[int] = set()

    def line_of(self, node: yaml.Node) -> int:
        return int(node.start_mark.line) + self.first_line

    def value(self, node: yaml.Node, path: YamlPath) -> Any:
        self.count += 1
        if self.count > _MAX_YAML_NODES:
            problem = f"more than {_MAX_YAML_NODES} values (are aliases expanding in a loop?)"
            raise plan_error(self.doc.file, self.line_of(node), "yaml", problem)
        self.doc.lines.setdefault(path, self.line_of(node))
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, (*path, index)) for index, item in enumerate(node.value)]
        return self.scalar(node, path)

    def mapping(self, node: yaml.MappingNode, path: YamlPath) -> dict[str, Any]:
        self.check_unique_keys(node)
        self.loader.flatten_mapping(node)  # resolves "<<: *base" merge keys; later keys win
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node)
            self.doc.lines[(*path, key)] = self.line_of(key_node)
            result[key] = self.value(value_node, (*path, key))
        return result

    def check_unique_keys(self, node: yaml.MappingNode) -> None:
        """A key written twice is a typo YAML would silently resolve by keeping the last one."""
        if id(node) in self.checked:
            return  # an alias: checked the first time, and merge keys are flattened by now
        self.checked.add(id(node))
        seen: dict[str, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key, line = self.key(key_node), self.line_of(key_node)
            if key in seen:
                problem = f"key {show(key)} appears twice (first on line {seen[key]})"
                raise plan_error(self.doc.file, line, key, problem)
            seen[key] = line

    def key(self, node: yaml.Node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise plan_error(self.doc.file, self.line_of(node), "yaml", "keys must be plain text")
        key = self.loader.construct_object(node)
        return key if isinstance(key, str) else str(node.value)

    def scalar(self, node: yaml.Node, path: YamlPath) -> Any:
        try:
            value = self.loader.construct_object(node)
        except (ValueError, OverflowError):
            # "2024-13-45" looks like a date, a 5,000-digit number is too long for int():
            # keep what the user wrote.
            value = str(node.value)
        if isinstance(value, str):
            return value
        self.doc.raw[path] = str(node.value)
        if value is None or isinstance(value, bool | int | float):
            return value
        return str(node.value)  # dates, binary: keep the text so the data stays JSON-ready
