"""A minimal HL7 v2 ER7 reader for the decode hot path, observably equal to python-hl7 for what it reads.

`hl7.parse` builds the whole tree (every field of every OBX, as nested list objects) before decode_adt
reads a few dozen values: ~3.5 ms of a ~5.5 ms decode for a 3 KB message. This reader finds only the
segments asked for, splits those into fields, and a field into repetitions, components and
subcomponents only along the accessor path asked for (bench/decode.py measures both).

python-hl7 stays the reference (`decode_adt_reference`; tests/unit/test_hl7v2_fast.py compares the
two). Where python-hl7's behaviour is idiosyncratic, this reader copies it rather than "fixing" it:

* the tree shape: a field/repetition/component is only split when it contains its own or a lower-level
  separator, and the accessor rules (missing field -> '' only when the rest of the path is all 1s,
  running off a leaf -> IndexError, ...) depend on that shape, as in `hl7.Segment.extract_field`;
* accessor values are unescaped with python-hl7's own `hl7.util.unescape` (accessor paths unescape;
  `str()` of a container does not, which `Er7Segment.component` reproduces for DG1);
* a segment matches a name when its first field is exactly that name (a segment with no separator at
  all matches nothing), and any segment starting MSH/BHS/FHS is named by those letters; MSH-1 is the
  field separator and MSH-2 the encoding characters, so MSH-3 is the first field after `MSH|^~\\&|`;
* an empty segment (an interior blank line) makes every segment lookup raise IndexError, as
  `hl7.Message.segments` does when it reads the name of an empty segment;
* `hl7.parse` strips all whitespace from both ends, not only what `normalise` strips.

`parse_er7` returns None when MSH-1/MSH-2 repeat a character (a CR included) or use a letter, digit or
whitespace: python-hl7's parse plan then goes astray (or fails an assertion), and the caller leaves
such a message to python-hl7. Escape sequences are rare, so unescaping costs nothing for the common
leaf: python-hl7 returns a leaf untouched when it holds no escape character, and so does this reader.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from hl7 import Accessor
from hl7.util import unescape as _hl7_unescape

HEADER_SEGMENTS = ("MSH", "BHS", "FHS")  # python-hl7 splits these with MSH-1/MSH-2 as fields


class _Path(NamedTuple):
    """An accessor path with python-hl7's defaults applied (`hl7.Segment.extract_field`)."""

    name: str
    segment_index: int  # into the list of segments with that name
    field_num: int | None  # as written, for messages and the MSH-1/MSH-2 rule
    field: int
    repeat: int
    component: int
    subcomponent: int
    raw: bool  # MSH-1 and MSH-2 are returned without unescaping


_PATHS: dict[str, _Path] = {}
_MAX_CACHED_PATHS = 4096  # the decode reads a fixed set of paths; the bound only guards misuse


def _path(path: str) -> _Path:
    """`PID.F3.R1.C4.S1` -> its parts, read with python-hl7's own key grammar (cached: a plain dict
    lookup is a third of what lru_cache costs, and the decode makes ~30 a message)."""
    parts = _PATHS.get(path)
    if parts is None:
        parts = _parse_path(path)
        if len(_PATHS) < _MAX_CACHED_PATHS:
            _PATHS[path] = parts
    return parts


def _parse_path(path: str) -> _Path:
    name, segment_num, field_num, repeat_num, component_num, subcomponent_num = Accessor.parse_key(path)
    return _Path(
        name,
        segment_num - 1 if segment_num >= 1 else segment_num,
        field_num,
        field_num or 1,
        repeat_num or 1,
        component_num or 1,
        subcomponent_num or 1,
        name == "MSH" and field_num in (1, 2),
    )


def _at(items: list[str], index: int) -> str:
    """`hl7.Sequence.__call__`: 1-based for positive indexes, Python indexing otherwise."""
    return items[index - 1 if index >= 1 else index]


class Encoding:
    """MSH-1 and MSH-2 as python-hl7 reads them (`hl7.parser.create_parse_plan`). `esc` and `separators`
    are the attributes `hl7.util.unescape` reads from a container, so this stands in for one."""

    __slots__ = ("comp_sep", "esc", "field_sep", "rep_sep", "separators", "sub_sep")

    def __init__(self, field_sep: str, rep_sep: str, comp_sep: str, sub_sep: str, esc: str) -> None:
        self.field_sep, self.rep_sep, self.comp_sep, self.sub_sep, self.esc = field_sep, rep_sep, comp_sep, sub_sep, esc
        self.separators = "\r" + field_sep + rep_sep + comp_sep + sub_sep


@lru_cache(maxsize=256)
def encoding(seps: str) -> Encoding | None:
    """MSH-1 + MSH-2 (`|^~\\&`) -> the separators, python-hl7's defaults for absent ones; None when they
    are ones python-hl7 parses idiosyncratically (repeated, letters/digits, whitespace)."""
    field_sep = seps[0]
    comp_sep = seps[1] if len(seps) > 1 else "^"
    rep_sep = seps[2] if len(seps) > 2 else "~"
    esc = seps[3] if len(seps) > 3 else "\\"
    sub_sep = seps[4] if len(seps) > 4 else "&"
    structural = (field_sep, rep_sep, comp_sep, sub_sep)
    if len({"\r", *structural}) != 5 or any(c.isalnum() or c.isspace() for c in structural):
        return None  # hl7.parser._ParsePlan walks its separators with str.find: repeats derail it
    return Encoding(field_sep, rep_sep, comp_sep, sub_sep, esc)


class Er7Segment:
    """One segment, split into fields. Field 0 is the segment name, so indexes are HL7 field numbers."""

    __slots__ = ("_comp", "_esc", "_msg", "_rep", "_sub", "fields", "header", "name", "text")

    def __init__(self, msg: Er7Message, name: str, text: str) -> None:
        self._msg = msg
        self._rep, self._comp, self._sub, self._esc = msg.rep_sep, msg.comp_sep, msg.sub_sep, msg.esc
        self.name = name
        self.text = text
        self.header = name in HEADER_SEGMENTS
        if self.header:
            # hl7.parser._split: MSH-1 is the character after "MSH", MSH-2 runs to its next occurrence
            # (kept as python-hl7 slices it when there is none), the fields after it are split as usual.
            sep0 = text[3]
            end = text.find(sep0, 4)
            rest = text[end + 1 :]
            self.fields = [text[:3], sep0, text[4:end], *(rest.split(msg.field_sep) if rest else ())]
        else:
            self.fields = text.split(msg.field_sep)

    def _is_leaf(self, field_no: int, text: str) -> bool:
        """python-hl7 keeps a field as one string (an hl7.Field holding a str) when it holds no
        repetition, component or subcomponent separator; MSH-1 and MSH-2 are always kept whole."""
        if self._rep not in text and self._comp not in text and self._sub not in text:
            return True
        return self.header and (field_no if field_no >= 0 else len(self.fields) + field_no) in (1, 2)

    def extract(self, path: _Path) -> str:
        """`hl7.Segment.extract_field`: the unescaped value, '' or IndexError exactly where it gives them."""
        fields = self.fields
        fno, rno, cno, sno = path.field, path.repeat, path.component, path.subcomponent
        if fno >= len(fields):
            if rno == 1 and cno == 1 and sno == 1:
                return ""  # assume a non-present optional value
            raise IndexError(f"Field not present: {self.name}.{path.field_num}")
        text = fields[fno]
        if self._is_leaf(fno, text):
            leaf = [text][rno - 1 if rno >= 1 else rno]  # hl7.Field([text])
            if cno == 1 and sno == 1:
                return leaf if path.raw or self._esc not in leaf else self._msg.unescape(leaf)
            raise IndexError(f"Field reaches leaf node before completing path: {self.name}.{path.field_num}")
        comp, sub = self._comp, self._sub
        repetition = _at(text.split(self._rep), rno)
        if comp not in repetition and sub not in repetition:  # hl7.Repetition([repetition])
            if cno > 1:
                if sno == 1:
                    return ""
                raise IndexError(f"Component not present: {self.name}.{path.field_num}")
            if sno == 1:
                leaf = [repetition][cno - 1 if cno >= 1 else cno]
                return leaf if self._esc not in leaf else self._msg.unescape(leaf)
            raise IndexError(f"Field reaches leaf node before completing path: {self.name}.{path.field_num}")
        components = repetition.split(comp)  # hl7.Repetition of hl7.Component
        if cno > len(components):
            if sno == 1:
                return ""
            raise IndexError(f"Component not present: {self.name}.{path.field_num}")
        subcomponents = _at(components, cno).split(sub)
        if sno <= len(subcomponents):
            leaf = _at(subcomponents, sno)
            return leaf if self._esc not in leaf else self._msg.unescape(leaf)
        return ""

    def leaf(self, field_no: int) -> str:
        """The field's raw text when it holds no separator (a plain str in python-hl7); '' otherwise."""
        fields = self.fields
        if len(fields) <= field_no:
            return ""
        text = fields[field_no]
        return text.strip() if self._is_leaf(field_no, text) else ""

    def component(self, field_no: int, component: int) -> str:
        """`str(seg(field_no)(1)(component)).strip()`: first repetition, raw (escape sequences kept, as
        `str()` of an hl7 container keeps them; subcomponents joined by '&'); '' when absent."""
        fields = self.fields
        if len(fields) <= field_no:
            return ""
        text = fields[field_no]
        if self._is_leaf(field_no, text):
            return ""  # seg(n)(1) is a str; calling it raises TypeError, which reads as absent
        repetition = text.split(self._rep, 1)[0]
        split = self._comp in repetition or self._sub in repetition
        try:
            return _at(repetition.split(self._comp) if split else [repetition], component).strip()
        except IndexError:
            return ""


class Er7Message:
    """A message read on demand: a segment is found by searching the text for its name and split into
    fields only when it is read. Build it with `parse_er7`."""

    __slots__ = (
        "_empty_segment",
        "_segments",
        "comp_sep",
        "encoding",
        "esc",
        "field_sep",
        "rep_sep",
        "sub_sep",
        "text",
    )

    def __init__(self, text: str, encoding: Encoding) -> None:
        self.text = text
        self.encoding = encoding
        self.field_sep, self.rep_sep, self.comp_sep, self.sub_sep = (
            encoding.field_sep,
            encoding.rep_sep,
            encoding.comp_sep,
            encoding.sub_sep,
        )
        self.esc = encoding.esc
        self._empty_segment = "\r\r" in text  # the text is stripped, so this is any empty segment
        self._segments: dict[str, list[Er7Segment]] = {}

    def unescape(self, leaf: str) -> str:
        if self.esc not in leaf:
            return leaf
        return _hl7_unescape(self.encoding, leaf)

    def segments(self, name: str) -> list[Er7Segment]:
        """Every segment named `name`, in order: `hl7.Message.segments` (KeyError when there is none)."""
        found = self._segments.get(name)
        if found is None:
            if self._empty_segment:
                # python-hl7 reads segment[0][0] of every segment; an empty one has none.
                raise IndexError("string index out of range")
            found = self._segments[name] = [Er7Segment(self, name, text) for text in self._find(name)]
        if not found:
            raise KeyError(f"No {name} segments")
        return found

    def _find(self, name: str) -> list[str]:
        """The texts of the segments python-hl7 names `name`: those whose first field is `name`, and for
        MSH/BHS/FHS any segment starting with those letters that holds a separator."""
        fs, rs, cs, ss = self.field_sep, self.rep_sep, self.comp_sep, self.sub_sep
        header = name in HEADER_SEGMENTS
        if not header and (fs in name or rs in name or cs in name or ss in name):
            return []  # python-hl7 splits such a name into parts: it never equals a string
        if not header and name[:3] in HEADER_SEGMENTS:
            return []  # "MSHX|...": python-hl7 names it MSH
        text = self.text
        prefix = name if header else name + fs
        needle = "\r" + prefix
        found: list[str] = []
        if text.startswith(prefix):
            pos = 0
        else:
            pos = text.find(needle) + 1
            if pos == 0:
                return found
        while True:
            end = text.find("\r", pos)
            segment = text[pos:] if end == -1 else text[pos:end]
            if not header or fs in segment or rs in segment or cs in segment or ss in segment:
                found.append(segment)
            if end == -1:
                return found
            pos = text.find(needle, end) + 1
            if pos == 0:
                return found

    def value(self, path: str) -> str:
        """`str(msg[path]).strip()`, '' where that raises KeyError or IndexError (absent)."""
        parts = _PATHS.get(path) or _path(path)
        try:
            segments = self._segments.get(parts.name) or self.segments(parts.name)
            return segments[parts.segment_index].extract(parts).strip()
        except (KeyError, IndexError):
            return ""

    def __getitem__(self, path: str) -> str:
        """`hl7.Message[path]` for an accessor path such as `PID.F3.R1.C4.S1`: KeyError when the segment
        is absent, IndexError when the path runs off the message, else the unescaped value."""
        if len(path) <= 3:
            raise ValueError(f"an accessor path names a field: {path!r}")
        parts = _path(path)
        segments = self._segments.get(parts.name) or self.segments(parts.name)
        return segments[parts.segment_index].extract(parts)


def parse_er7(text: str) -> Er7Message | None:
    """Normalised text (`hl7v2_decode.normalise`: CR-separated, starting with MSH) -> an `Er7Message`;
    None when the MSH header is one this reader leaves to python-hl7 (see the module docstring)."""
    text = text.strip()  # hl7.parse strips all whitespace too (normalise strips only framing and CR/LF)
    if len(text) < 4 or text[:3] != "MSH":
        return None
    # hl7.parser.create_parse_plan: from MSH-1 to the next field separator anywhere in the message (when
    # there is none, find() gives -1 and the slice drops the last character, as python-hl7's does).
    seps = text[3 : text.find(text[3], 4)]
    found = encoding(seps) if seps else None
    return Er7Message(text, found) if found else None
