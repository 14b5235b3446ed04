"""Numbers and documents read from users' files and flags, checked once where they come in.

Every number fastast reads from a file it did not just compute (a manifest, a recipe, a
checkpoint's meta, a Hugging Face `config.json`, a datafile) or from a flag goes through
`number`: it must be a number (a bool is not), finite, within the range where it means
something, and an integer where a count is meant. YAML and JSON are parsed with budgets (size,
and for YAML the nodes its aliases expand to) and refuse a key given twice, so a crafted file
can neither exhaust memory nor have its last duplicate silently win. Lists built from a user's
range (`start:stop:step`) are bounded before they are built. Messages quote values shortened.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Sequence
from typing import Any

import yaml

from fastast_cli.errors import FastASTError

MAX_DOCUMENT_BYTES = 8 << 20  # a manifest, recipe or config.json is a few KB
MAX_YAML_NODES = 100_000  # nodes once aliases are expanded (a recipe has ~50)
MAX_RANGE_ITEMS = 10_000  # values one `start:stop:step` may expand to

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 60, 60, 6, 6
_short.maxlevel = 2


def shown(value: Any) -> str:
    """`repr(value)` cut to a line: what an error message quotes of a user's value."""
    return _short.repr(value)


def number(value: Any, what: str, *, low: float | None = None, high: float | None = None,
           above: float | None = None, integer: bool = False) -> Any:
    """`value` as a finite int (`integer`) or float within [low, high] (and > `above`);
    anything else is a FastASTError naming `what` (e.g. "data/manifest.yaml: std").

    Strings of numbers are accepted (YAML reads `1e-4` as a string); bools are not numbers.
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FastASTError(f"{what} must be {kind}, got {shown(value)}")
    try:
        parsed = float(value)
    except (ValueError, OverflowError):
        raise FastASTError(f"{what} must be {kind}, got {shown(value)}") from None
    if not math.isfinite(parsed):
        raise FastASTError(f"{what} must be a finite number, got {shown(value)}")
    if integer:
        if not parsed.is_integer():
            raise FastASTError(f"{what} must be {kind}, got {shown(value)}")
        parsed = int(value) if isinstance(value, int) else int(parsed)
    if low is not None and parsed < low:
        raise FastASTError(f"{what} must be >= {low:g}, got {shown(value)}")
    if high is not None and parsed > high:
        raise FastASTError(f"{what} must be <= {high:g}, got {shown(value)}")
    if above is not None and parsed <= above:
        raise FastASTError(f"{what} must be > {above:g}, got {shown(value)}")
    return parsed


def all_finite(values: Any) -> bool:
    """Whether every element of an array or tensor (or a float) is finite."""
    import numpy as np

    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return bool(np.isfinite(np.asarray(values, dtype=np.float64)).all())


def bounded_range(start: int, stop: int, step: int, what: str,
                  limit: int = MAX_RANGE_ITEMS) -> list[int]:
    """`range(start, stop + 1, step)` (stop included) as a list, refused before it is built
    when it would hold more than `limit` values."""
    if step <= 0:
        raise FastASTError(f"{what}: the step must be >= 1, got {step}")
    count = max(0, (stop - start) // step + 1)
    if count > limit:
        raise FastASTError(f"{what} gives {count:,} values; at most {limit:,} are allowed")
    return list(range(start, stop + 1, step))


def bounded_list(values: Sequence[Any], what: str, limit: int = MAX_RANGE_ITEMS) -> None:
    """Refuse a list a user wrote out with more than `limit` values."""
    if len(values) > limit:
        raise FastASTError(f"{what} gives {len(values):,} values; at most {limit:,} are allowed")


# --- documents --------------------------------------------------------------------------------

def _check_size(text: str | bytes, source: str, limit: int | None = MAX_DOCUMENT_BYTES) -> None:
    if limit is not None and len(text) > limit:
        raise FastASTError(f"{source}: {len(text):,} bytes is too large for a settings file "
                           f"(at most {limit >> 20} MiB)")


class _BudgetLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in a mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader names it
                continue
            if duplicate:
                raise FastASTError(f"{self.source}: key {shown(key)} is given twice "
                                   f"(line {key_node.start_mark.line + 1})")
        return super().construct_mapping(node, deep=deep)


def _expanded_nodes(root: yaml.Node) -> int:
    """Nodes of the document with every alias expanded, counted without expanding them
    (an alias is the same node object, so sizes are memoized by identity)."""
    sizes: dict[int, int] = {}
    order: list[yaml.Node] = []
    stack, seen = [root], set()
    while stack:  # post-order without recursion
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        stack.extend(_children(node))
    for node in reversed(order):
        total = 1 + sum(sizes.get(id(child), 1) for child in _children(node))
        sizes[id(node)] = min(total, MAX_YAML_NODES + 1)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML safely within budgets: at most MAX_DOCUMENT_BYTES, MAX_YAML_NODES nodes with
    aliases expanded (an alias bomb is refused before it is built), no key given twice."""
    _check_size(text, source)
    loader = _BudgetLoader(text)
    loader.source = source
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        if _expanded_nodes(root) > MAX_YAML_NODES:
            raise FastASTError(f"{source}: YAML expands to more than {MAX_YAML_NODES:,} values "
                               "(aliases that repeat each other?); refused")
        return loader.construct_document(root)
    except yaml.YAMLError as error:
        raise FastASTError(f"{source}: not valid YAML ({shown(str(error))})") from None
    except RecursionError:
        raise FastASTError(f"{source}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


class _DuplicateKey(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(text: str, source: str, limit: int | None = MAX_DOCUMENT_BYTES) -> Any:
    """Parse JSON of at most `limit` bytes (None: a datafile, any size), refusing a key given
    twice and NaN or Infinity (not JSON, though Python's json accepts them)."""
    _check_size(text, source, limit)
    try:
        return json.loads(text, object_pairs_hook=_unique_object, parse_constant=_no_constant)
    except _DuplicateKey as error:
        raise FastASTError(f"{source}: key {shown(error.args[0])} is given twice") from None
    except json.JSONDecodeError as error:
        raise FastASTError(f"{source}: not valid JSON ({error.msg}, line {error.lineno})"
                           ) from None
    except ValueError as error:
        raise FastASTError(f"{source}: not valid JSON ({error})") from None
    except RecursionError:
        raise FastASTError(f"{source}: JSON nested too deeply") from None
