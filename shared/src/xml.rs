//! WeChat's XML, in two steps: [`parse`] decodes a body into a tree of [`Fields`] (no schema, no
//! serde), and each channel turns those fields into its typed message. [`XmlWriter`] renders
//! replies with CDATA that is safe for any text.
//!
//! Hardened for untrusted input: DTDs are refused (no entity expansion, no external entities),
//! nesting depth and element count are capped, and only the predefined and numeric entities are
//! understood.

use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::Reader;

/// Deepest element nesting accepted (WeChat's payloads nest four levels at most).
pub const MAX_DEPTH: usize = 16;
/// Most elements accepted in one document.
pub const MAX_ELEMENTS: usize = 4096;

/// Why a body is not acceptable XML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("body is not well-formed XML: {0}")]
    Malformed(String),
    #[error("the root element must be <xml>")]
    WrongRoot,
    #[error("document type declarations are not allowed")]
    Dtd,
    #[error("XML nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("XML has more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("body has no <xml> element")]
    Empty,
}

/// One element's value: its text (CDATA unwrapped, entities decoded), its children, or the
/// values of an element that occurs more than once.
#[derive(Debug, Clone, PartialEq)]
pub enum XmlValue {
    Text(String),
    Node(Fields),
    List(Vec<XmlValue>),
}

impl XmlValue {
    /// The text of a leaf element (the first one if the element repeats).
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            Self::List(items) => items.first().and_then(Self::text),
            Self::Node(_) => None,
        }
    }

    /// The values of a repeatable element: one occurrence is a list of one.
    pub fn items(&self) -> &[XmlValue] {
        match self {
            Self::List(items) => items,
            single => std::slice::from_ref(single),
        }
    }

    /// The children of a nested element (the first one if the element repeats).
    pub fn node(&self) -> Option<&Fields> {
        match self {
            Self::Node(fields) => Some(fields),
            Self::List(items) => items.first().and_then(Self::node),
            Self::Text(_) => None,
        }
    }

    /// As JSON: text → string, children → object, repeats → array.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Text(text) => serde_json::Value::String(text.clone()),
            Self::Node(fields) => fields.to_json(),
            Self::List(items) => serde_json::Value::Array(items.iter().map(Self::to_json).collect()),
        }
    }
}

/// The child elements of one element, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(BTreeMap<String, XmlValue>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&XmlValue> {
        self.0.get(name)
    }

    /// The text of a leaf child, if present.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(XmlValue::text)
    }

    /// The text of a leaf child, `None` when absent or empty.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.text(name).filter(|text| !text.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &XmlValue)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As a JSON object (the `raw` of an `Inbound`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.0.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
    }

    fn insert(&mut self, name: String, value: XmlValue) {
        use std::collections::btree_map::Entry;
        match self.0.entry(name) {
            Entry::Vacant(slot) => {
                slot.insert(value);
            }
            Entry::Occupied(mut slot) => match slot.get_mut() {
                XmlValue::List(items) => items.push(value),
                existing => {
                    let first = std::mem::replace(existing, XmlValue::List(Vec::new()));
                    *existing = XmlValue::List(vec![first, value]);
                }
            },
        }
    }
}

struct Frame {
    name: String,
    fields: Fields,
    text: String,
}

impl Frame {
    fn into_value(self) -> XmlValue {
        if self.fields.is_empty() {
            XmlValue::Text(self.text)
        } else {
            XmlValue::Node(self.fields)
        }
    }
}

fn malformed(err: impl std::fmt::Display) -> XmlError {
    XmlError::Malformed(err.to_string())
}

/// Parses a `<xml>…</xml>` document into its fields. Elements may come in any order; unknown
/// ones are kept; whitespace between elements is dropped, text inside leaves is kept exactly.
pub fn parse(input: &str) -> Result<Fields, XmlError> {
    let mut reader = Reader::from_str(input);
    let mut stack: Vec<Frame> = Vec::new();
    let mut elements = 0usize;
    let mut root: Option<Fields> = None;

    loop {
        let event = reader.read_event().map_err(malformed)?;
        match event {
            Event::Eof => break,
            Event::DocType(_) => return Err(XmlError::Dtd),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Start(start) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                let name = std::str::from_utf8(start.name().as_ref()).map_err(malformed)?.to_owned();
                if stack.is_empty() && (root.is_some() || name != "xml") {
                    return Err(XmlError::WrongRoot);
                }
                stack.push(Frame { name, fields: Fields::default(), text: String::new() });
            }
            Event::Empty(empty) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                let name = std::str::from_utf8(empty.name().as_ref()).map_err(malformed)?.to_owned();
                match stack.last_mut() {
                    Some(parent) => parent.fields.insert(name, XmlValue::Text(String::new())),
                    None if root.is_none() && name == "xml" => root = Some(Fields::default()),
                    None => return Err(XmlError::WrongRoot),
                }
            }
            Event::Text(text) => {
                let text = text.unescape().map_err(malformed)?;
                match stack.last_mut() {
                    Some(frame) => frame.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(malformed("text outside the root element")),
                }
            }
            Event::CData(cdata) => {
                let frame = stack.last_mut().ok_or_else(|| malformed("CDATA outside the root element"))?;
                frame.text.push_str(std::str::from_utf8(&cdata).map_err(malformed)?);
            }
            Event::End(_) => {
                // quick-xml has already checked that the end tag matches.
                let frame = stack.pop().ok_or_else(|| malformed("unexpected end tag"))?;
                match stack.last_mut() {
                    Some(parent) => {
                        let name = frame.name.clone();
                        parent.fields.insert(name, frame.into_value());
                    }
                    None => root = Some(frame.fields),
                }
            }
        }
    }
    if !stack.is_empty() {
        return Err(malformed("document ends inside an element"));
    }
    root.ok_or(XmlError::Empty)
}

/// Renders reply XML: element text goes in CDATA sections that are split around `]]>`.
pub struct XmlWriter {
    out: String,
}

impl XmlWriter {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { out: String::with_capacity(capacity) }
    }

    /// Appends markup as is.
    pub fn raw(&mut self, markup: &str) -> &mut Self {
        self.out.push_str(markup);
        self
    }

    /// `<name><![CDATA[value]]></name>`, safe for any value.
    pub fn cdata_element(&mut self, name: &str, value: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str("><![CDATA[");
        // "]]>" would end the section: close it after "]]" and reopen before ">".
        let mut parts = value.split("]]>");
        if let Some(first) = parts.next() {
            self.out.push_str(first);
        }
        for part in parts {
            self.out.push_str("]]]]><![CDATA[>");
            self.out.push_str(part);
        }
        self.out.push_str("]]></");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// `<name>value</name>` with `&`, `<` and `>` escaped (numbers and timestamps).
    pub fn text_element(&mut self, name: &str, value: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        for ch in value.chars() {
            match ch {
                '&' => self.out.push_str("&amp;"),
                '<' => self.out.push_str("&lt;"),
                '>' => self.out.push_str("&gt;"),
                other => self.out.push(other),
            }
        }
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cdata_entities_nesting_and_repeats() {
        let fields = parse(
            "<?xml version=\"1.0\"?>\n<xml>\n  <A><![CDATA[x & y]]></A><B>1 &amp; 2</B><Empty/><E></E>\
             <List><Item>a</Item><Item><![CDATA[b]]></Item></List><One><Item>c</Item></One></xml>\n",
        )
        .unwrap();
        assert_eq!(fields.text("A"), Some("x & y"));
        assert_eq!(fields.text("B"), Some("1 & 2"));
        assert_eq!(fields.text("Empty"), Some(""));
        assert_eq!(fields.text("E"), Some(""));
        let list = fields.get("List").unwrap().node().unwrap().get("Item").unwrap();
        assert_eq!(list.items().iter().map(|v| v.text().unwrap()).collect::<Vec<_>>(), ["a", "b"]);
        let one = fields.get("One").unwrap().node().unwrap().get("Item").unwrap();
        assert_eq!(one.items().len(), 1);
    }

    #[test]
    fn keeps_whitespace_inside_leaf_text() {
        let fields = parse("<xml><Content><![CDATA[  two  spaces \n]]></Content></xml>").unwrap();
        assert_eq!(fields.text("Content"), Some("  two  spaces \n"));
    }

    #[test]
    fn refuses_dtd_and_external_entities() {
        let xxe = "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml><A>&x;</A></xml>";
        assert_eq!(parse(xxe).unwrap_err(), XmlError::Dtd);
        assert!(matches!(parse("<xml><A>&x;</A></xml>").unwrap_err(), XmlError::Malformed(_)));
    }

    #[test]
    fn rejects_malformed_documents() {
        for bad in ["", "   ", "<xml>", "<xml><A></B></xml>", "<xml></xml><xml></xml>", "<root></root>", "text", "<xml><A>1</A></xml>trailing<"] {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn caps_depth_and_element_count() {
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert_eq!(parse(&deep).unwrap_err(), XmlError::TooDeep);
        let wide = format!("<xml>{}</xml>", "<a/>".repeat(MAX_ELEMENTS));
        assert_eq!(parse(&wide).unwrap_err(), XmlError::TooManyElements);
    }

    #[test]
    fn cdata_writer_survives_terminator_in_text() {
        let mut w = XmlWriter::with_capacity(64);
        w.raw("<xml>").cdata_element("C", "a]]>b]]>").text_element("T", "1<2&3").raw("</xml>");
        let xml = w.finish();
        let fields = parse(&xml).unwrap();
        assert_eq!(fields.text("C"), Some("a]]>b]]>"));
        assert_eq!(fields.text("T"), Some("1<2&3"));
    }
}
