"""Untrusted BPMN bytes to a safe tree, a canonical text, and a semantic diff of two versions.

Every upload is parsed here and only here, with entity expansion, DTD loading and network
access off and a size cap; a document that declares a DOCTYPE or entities at all is refused
(billion laughs, XXE, external DTDs), so nothing later has to think about them.

Versions are stored in canonical form (inclusive C14N 1.0, which keeps namespace declarations
where they were written, so QNames inside attribute values such as xsi:type stay bound;
attributes in a fixed order, no comments,
whitespace between elements normalized and re-indented) so that two uploads of the same
diagram are byte-identical and a textual diff shows only real edits. `diff_definitions`
goes further and lists which BPMN elements were added, removed or changed in ways that
matter to execution (names, operations, parameters, retry policies, conditions, timers,
scripts, flow sources and targets); moving a shape in the diagram is not a change.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from lxml import etree

__all__ = [
    "BPMN_NS",
    "DEFAULT_MAX_BYTES",
    "SPIFF_NS",
    "BpmnXmlError",
    "DefinitionDiff",
    "ElementChange",
    "ElementRef",
    "canonical_xml",
    "diff_definitions",
    "safe_parse",
]

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core"
DEFAULT_MAX_BYTES = 2 * 1024 * 1024


class BpmnXmlError(ValueError):
    """The bytes are not a document we are willing to read; `code` says why."""

    def __init__(self, code: str, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.line = line


# Markers of a DTD; checked on the raw bytes (cheap, before any parsing) and again on the
# parsed document, which also catches UTF-16/32 files where the ASCII scan sees nothing.
_DTD_MARKER = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY|ELEMENT|ATTLIST)", re.IGNORECASE)


def _decoded_for_scan(data: bytes) -> bytes:
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                       (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(codec, errors="replace").encode("utf-8", errors="replace")
    if data[:4] in (b"\x00<\x00?", b"<\x00?\x00", b"\x00\x00\x00<", b"<\x00\x00\x00"):
        for codec in ("utf-16-be", "utf-16-le", "utf-32-be", "utf-32-le"):
            try:
                return data.decode(codec).encode("utf-8")
            except UnicodeDecodeError:
                continue
    return data


def _parser() -> etree.XMLParser:
    # A new parser per call: lxml parsers keep state and are not meant to be shared.
    return etree.XMLParser(resolve_entities=False, no_network=True, dtd_validation=False,
                           load_dtd=False, huge_tree=False, remove_comments=False,
                           remove_pis=False)


def safe_parse(data: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._ElementTree:
    """Parse untrusted XML, refusing oversized files and any DTD or entity declaration."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > max_bytes:
        raise BpmnXmlError("too_large", f"the file is {len(data)} bytes; the limit is "
                                        f"{max_bytes} bytes. Upload a smaller process file")
    if _DTD_MARKER.search(data) or _DTD_MARKER.search(_decoded_for_scan(data)):
        raise BpmnXmlError("doctype_forbidden", "the file declares a DOCTYPE or entities; "
                           "BPMN files never need them. Remove the <!DOCTYPE ...> block")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as err:
        line = err.lineno if isinstance(err.lineno, int) else None
        raise BpmnXmlError("malformed_xml", f"the file is not well-formed XML (line {line}): "
                           f"{err.msg}. Fix the XML or export the diagram again",
                           line) from None
    except ValueError as err:  # e.g. an unsupported encoding declaration
        raise BpmnXmlError("malformed_xml", f"the file cannot be read as XML: {err}") from None
    if root is None:
        raise BpmnXmlError("malformed_xml", "the file is empty")
    tree = root.getroottree()
    info = tree.docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise BpmnXmlError("doctype_forbidden", "the file declares a DOCTYPE; BPMN files never "
                           "need one. Remove the <!DOCTYPE ...> block")
    for _ in root.iter(etree.Entity):
        raise BpmnXmlError("doctype_forbidden", "the file uses entity references; replace "
                           "them with the text they stand for")
    return tree


def _clean(root: etree._Element) -> etree._Element:
    """A copy without comments, processing instructions and whitespace-only layout text."""
    root = etree.fromstring(etree.tostring(root), _parser())
    for node in list(root.iter(etree.Comment, etree.ProcessingInstruction)):
        parent = node.getparent()
        if parent is not None:
            # keep the text that followed the comment, it may be part of a script
            if node.tail and node.tail.strip():
                prev = node.getprevious()
                if prev is not None:
                    prev.tail = (prev.tail or "") + node.tail
                else:
                    parent.text = (parent.text or "") + node.tail
            parent.remove(node)
    for el in root.iter():
        if len(el) and el.text is not None and not el.text.strip():
            el.text = None
        if el.tail is not None and not el.tail.strip():
            el.tail = None
    return root


def canonical_xml(data: bytes | str | etree._Element | etree._ElementTree, *,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The canonical bytes of a BPMN document (same diagram in, same bytes out)."""
    if isinstance(data, etree._ElementTree):
        root = data.getroot()
    elif isinstance(data, etree._Element):
        root = data
    else:
        root = safe_parse(data, max_bytes=max_bytes).getroot()
    root = _clean(root)
    etree.indent(root, space="  ")
    body = etree.tostring(root, method="c14n", exclusive=False, with_comments=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body + b"\n"


# --- semantic diff -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ElementRef:
    element_id: str
    element_type: str  # BPMN local name, e.g. "serviceTask"
    name: str


@dataclass(frozen=True, kw_only=True)
class ElementChange:
    element_id: str
    element_type: str
    name: str
    changes: tuple[str, ...]  # aspects that differ: "name", "operation", "parameters", ...


@dataclass(frozen=True, kw_only=True)
class DefinitionDiff:
    added: tuple[ElementRef, ...]
    removed: tuple[ElementRef, ...]
    changed: tuple[ElementChange, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, list[dict[str, object]]]:
        return {
            "added": [vars(e) for e in self.added],
            "removed": [vars(e) for e in self.removed],
            "changed": [{**vars(e), "changes": list(e.changes)} for e in self.changed],
        }


# Parts of elements, not elements of their own, although the modeler gives some of them ids.
_PART_TAGS = frozenset({
    "timerEventDefinition", "messageEventDefinition", "errorEventDefinition",
    "signalEventDefinition", "escalationEventDefinition", "conditionalEventDefinition",
    "terminateEventDefinition", "cancelEventDefinition", "compensateEventDefinition",
    "linkEventDefinition", "conditionExpression", "condition", "timeDate", "timeDuration",
    "timeCycle", "multiInstanceLoopCharacteristics", "standardLoopCharacteristics",
    "script", "documentation", "extensionElements", "incoming", "outgoing",
    "formalExpression", "messagePath", "loopCardinality", "completionCondition",
    "loopCondition", "ioSpecification", "dataInput", "dataOutput", "inputSet", "outputSet",
    "dataInputAssociation", "dataOutputAssociation", "correlationPropertyRetrievalExpression",
    "text",
})


# Diagram interchange (shapes, edges, bounds): layout, never semantics.
_DIAGRAM_NS_PREFIXES = ("http://www.omg.org/spec/BPMN/20100524/DI", "http://www.omg.org/spec/DD/")


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def _is_diffable(el: etree._Element) -> bool:
    if not isinstance(el.tag, str) or not el.get("id"):
        return False
    if etree.QName(el).namespace != BPMN_NS or _local(el) in _PART_TAGS:
        return False
    # anything inside extension elements belongs to its owner
    return not any(isinstance(a.tag, str) and _local(a) == "extensionElements"
                   for a in el.iterancestors())


def _text(el: etree._Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _aspects(el: etree._Element) -> dict[str, str]:
    """What matters about one element, aspect by aspect, for a readable diff."""
    ns = {"bpmn": BPMN_NS, "spiffworkflow": SPIFF_NS}
    out: dict[str, str] = {"type": _local(el), "name": el.get("name", "")}
    attrs = {k: v for k, v in el.attrib.items() if k not in ("id", "name", "sourceRef",
                                                             "targetRef")}
    out["attributes"] = repr(sorted(attrs.items()))
    if _local(el) == "sequenceFlow":
        out["source"] = el.get("sourceRef", "")
        out["target"] = el.get("targetRef", "")
        out["condition"] = _text(next(iter(el.xpath("bpmn:conditionExpression",
                                                    namespaces=ns)), None))
    for op in el.xpath("bpmn:extensionElements/spiffworkflow:serviceTaskOperator",
                       namespaces=ns):
        out["operation"] = op.get("id", "") + " -> " + op.get("resultVariable", "")
        out["parameters"] = repr(sorted(
            (p.get("id", ""), p.get("type", ""), p.get("value", ""))
            for p in op.xpath(".//spiffworkflow:parameter", namespaces=ns)))
        out["retry"] = repr([sorted(r.attrib.items())
                             for r in op.xpath(".//spiffworkflow:retry", namespaces=ns)])
    out["script"] = repr([_text(s) for s in el.xpath(
        "bpmn:script | bpmn:extensionElements/spiffworkflow:preScript"
        " | bpmn:extensionElements/spiffworkflow:postScript", namespaces=ns)])
    out["form"] = repr(sorted((p.get("name", ""), p.get("value", "")) for p in el.xpath(
        "bpmn:extensionElements/spiffworkflow:properties/spiffworkflow:property",
        namespaces=ns)))
    out["timer"] = repr([(_local(t), _text(t)) for t in el.xpath(
        "bpmn:timerEventDefinition/*", namespaces=ns)])
    out["event"] = repr([(_local(d), sorted((k, v) for k, v in d.attrib.items() if k != "id"))
                         for d in el if isinstance(d.tag, str)
                         and _local(d).endswith("EventDefinition")])
    out["content"] = _content(el)
    return out


def _content(el: etree._Element) -> str:
    """Everything else below the element, minus child elements diffed on their own."""
    copy = etree.fromstring(etree.tostring(el))
    for child in list(copy.iter()):
        if child is copy or not isinstance(child.tag, str):
            continue
        namespace = etree.QName(child).namespace or ""
        if (_is_diffable(child) or namespace.startswith(_DIAGRAM_NS_PREFIXES) or (
                namespace == BPMN_NS and _local(child) in ("incoming", "outgoing"))):
            parent = child.getparent()
            if parent is not None:
                parent.remove(child)
    copy.tail = None
    return etree.tostring(_clean(copy), method="c14n2").decode()


def _index(data: bytes | str | etree._Element) -> dict[str, etree._Element]:
    root = data if isinstance(data, etree._Element) else safe_parse(data).getroot()
    return {el.get("id"): el for el in root.iter() if _is_diffable(el)}


def diff_definitions(old: bytes | str | etree._Element,
                     new: bytes | str | etree._Element) -> DefinitionDiff:
    """Which BPMN elements (by id) were added, removed or changed between two versions."""
    before, after = _index(old), _index(new)

    def ref(el: etree._Element) -> ElementRef:
        return ElementRef(element_id=el.get("id"), element_type=_local(el),
                          name=el.get("name", ""))

    added = tuple(ref(after[i]) for i in sorted(after.keys() - before.keys()))
    removed = tuple(ref(before[i]) for i in sorted(before.keys() - after.keys()))
    changed: list[ElementChange] = []
    for element_id in sorted(before.keys() & after.keys()):
        a, b = _aspects(before[element_id]), _aspects(after[element_id])
        differing = [k for k in a.keys() | b.keys() if k != "content" and a.get(k) != b.get(k)]
        if not differing and a["content"] != b["content"]:
            differing = ["content"]
        if differing:
            el = after[element_id]
            changed.append(ElementChange(element_id=element_id, element_type=_local(el),
                                         name=el.get("name", ""),
                                         changes=tuple(sorted(differing))))
    return DefinitionDiff(added=added, removed=removed, changed=tuple(changed))
