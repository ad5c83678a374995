//! WeChat's XML, in two steps: [`parse`] decodes a body into a tree of [`Fields`] (no schema, no
//! serde), and each channel turns those fields into its typed message. [`XmlWriter`] renders
//! replies with CDATA that is safe for any text.
//!
//! Hardened for untrusted input: DTDs are refused (no entity expansion, no external entities),
//! nesting depth and element count are capped, and only the predefined and numeric entities are
//! understood.

use std::borrow::Cow;

use quick_xml::events::Event;
use quick_xml::Reader;

/// Deepest element nesting accepted (WeChat's payloads nest four levels at most).
pub const MAX_DEPTH: usize = 16;
/// Most elements accepted in one document.
pub const MAX_ELEMENTS: usize = 4096;
/// Most differently named children of one element (repeats of one name are unlimited).
pub const MAX_DISTINCT_CHILDREN: usize = 256;

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
    #[error("an element has more than {MAX_DISTINCT_CHILDREN} differently named children")]
    TooWide,
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

/// The child elements of one element, by name, in document order.
///
/// A small vector: WeChat payloads have a dozen fields, so a scan beats a map, and
/// [`MAX_DISTINCT_CHILDREN`] bounds it for hostile input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(Vec<(Cow<'static, str>, XmlValue)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&XmlValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The text of a leaf child, if present.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(XmlValue::text)
    }

    /// Adds a leaf child `name` with `text` unless one is there.
    pub fn or_insert_text(&mut self, name: &'static str, text: &str) {
        if self.get(name).is_none() {
            self.0.push((Cow::Borrowed(name), XmlValue::Text(text.to_owned())));
        }
    }

    /// The text of a leaf child, `None` when absent or empty.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.text(name).filter(|text| !text.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &XmlValue)> {
        self.0.iter().map(|(name, value)| (name.as_ref(), value))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As a JSON object (the `raw` of an `Inbound`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.0.iter().map(|(k, v)| (k.to_string(), v.to_json())).collect())
    }

    fn insert(&mut self, name: Cow<'static, str>, value: XmlValue) -> Result<(), XmlError> {
        let distinct = self.0.len();
        // Repeats are usually adjacent: search from the end.
        match self.0.iter_mut().rev().find(|(n, _)| *n == name) {
            Some((_, XmlValue::List(items))) => items.push(value),
            Some((_, existing)) => {
                let first = std::mem::replace(existing, XmlValue::List(Vec::new()));
                *existing = XmlValue::List(vec![first, value]);
            }
            None if distinct >= MAX_DISTINCT_CHILDREN => return Err(XmlError::TooWide),
            None => self.0.push((name, value)),
        }
        Ok(())
    }
}

/// Element names WeChat sends, kept without an allocation each.
macro_rules! known_names {
    ($($name:literal),* $(,)?) => {
        fn intern(name: &str) -> Cow<'static, str> {
            match name {
                $($name => Cow::Borrowed($name),)*
                other => Cow::Owned(other.to_owned()),
            }
        }
    };
}

known_names!(
    "ToUserName",
    "FromUserName",
    "CreateTime",
    "MsgType",
    "Content",
    "MsgId",
    "AgentID",
    "Encrypt",
    "MediaId",
    "PicUrl",
    "Format",
    "Recognition",
    "ThumbMediaId",
    "Location_X",
    "Location_Y",
    "Scale",
    "Label",
    "AppType",
    "Title",
    "Description",
    "Url",
    "Event",
    "EventKey",
    "Ticket",
    "Latitude",
    "Longitude",
    "Precision",
    "ChangeType",
    "UserID",
    "NewUserID",
    "Name",
    "Department",
    "Id",
    "ExternalUserID",
    "ChatId",
    "Item",
    "TaskId",
    "CardType",
    "ResponseCode",
    "MsgDataId",
    "Idx",
);

struct Frame {
    name: Cow<'static, str>,
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

/// A fixed description: quick-xml's own messages can quote document text (an unknown entity
/// quotes what follows `&`), and decrypted text must not reach responses or logs.
fn malformed(err: impl Into<Malformation>) -> XmlError {
    XmlError::Malformed(err.into().0.to_owned())
}

struct Malformation(&'static str);

impl From<&'static str> for Malformation {
    fn from(reason: &'static str) -> Self {
        Self(reason)
    }
}

impl From<quick_xml::Error> for Malformation {
    fn from(err: quick_xml::Error) -> Self {
        Self(match err {
            quick_xml::Error::Syntax(_) => "syntax error",
            quick_xml::Error::IllFormed(_) => "ill-formed document (mismatched or missing tags)",
            quick_xml::Error::Escape(_) => "invalid character or entity reference",
            quick_xml::Error::Encoding(_) => "invalid encoding",
            _ => "unreadable document",
        })
    }
}

impl From<quick_xml::escape::EscapeError> for Malformation {
    fn from(_: quick_xml::escape::EscapeError) -> Self {
        Self("invalid character or entity reference")
    }
}

impl From<std::str::Utf8Error> for Malformation {
    fn from(_: std::str::Utf8Error) -> Self {
        Self("invalid UTF-8 in an element name")
    }
}

/// What [`walk`] reports, in document order: names live as long as the event, text as the input.
enum Visit<'a, 'n> {
    Start(&'n str),
    Empty(&'n str),
    Text(Cow<'a, str>),
    End,
}

/// The text of an event that ends at `end` and holds `raw`, sliced from `input` (already valid
/// UTF-8) so that it is neither validated nor copied again; decoded only if that fails.
fn slice_of<'a>(input: &'a str, end: usize, raw: &[u8]) -> Result<&'a str, XmlError> {
    match end.checked_sub(raw.len()).and_then(|start| input.get(start..end)) {
        Some(slice) if slice.as_bytes() == raw => Ok(slice),
        _ => Err(malformed("text is not valid UTF-8")),
    }
}

fn name_of(name: &[u8]) -> Result<&str, XmlError> {
    std::str::from_utf8(name).map_err(malformed)
}

/// Streams a `<xml>…</xml>` document with the hardening rules, calling `visit` for each
/// element and text below the root. Returns when the root closes.
fn walk<'a>(
    input: &'a str,
    mut visit: impl for<'n> FnMut(Visit<'a, 'n>) -> Result<(), XmlError>,
) -> Result<(), XmlError> {
    // quick-xml skips a byte-order mark without counting it: drop it so offsets match `input`.
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    let mut reader = Reader::from_str(input);
    let mut depth = 0usize;
    let mut elements = 0usize;
    let mut root_seen = false;
    loop {
        let event = reader.read_event().map_err(malformed)?;
        let end = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        match event {
            Event::Eof => break,
            Event::DocType(_) => return Err(XmlError::Dtd),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Start(ref element) | Event::Empty(ref element) => {
                let opens = matches!(event, Event::Start(_));
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                if opens && depth >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                let name = element.name();
                if depth == 0 {
                    if root_seen || name.as_ref() != b"xml" {
                        return Err(XmlError::WrongRoot);
                    }
                    root_seen = true;
                } else {
                    let name = name_of(name.as_ref())?;
                    visit(if opens { Visit::Start(name) } else { Visit::Empty(name) })?;
                }
                if opens {
                    depth += 1;
                }
            }
            Event::Text(text) => {
                let raw = slice_of(input, end, &text)?;
                if depth == 0 {
                    if !raw.trim().is_empty() {
                        return Err(malformed("text outside the root element"));
                    }
                } else {
                    visit(Visit::Text(quick_xml::escape::unescape(raw).map_err(malformed)?))?;
                }
            }
            Event::CData(cdata) => {
                if depth == 0 {
                    return Err(malformed("CDATA outside the root element"));
                }
                // The content ends before the closing "]]>".
                let raw = slice_of(input, end.saturating_sub(3), &cdata)?;
                visit(Visit::Text(Cow::Borrowed(raw)))?;
            }
            Event::End(_) => {
                // quick-xml has already checked that the end tag matches.
                depth = depth.checked_sub(1).ok_or_else(|| malformed("unexpected end tag"))?;
                if depth > 0 {
                    visit(Visit::End)?;
                }
            }
        }
    }
    if depth != 0 {
        return Err(malformed("document ends inside an element"));
    }
    if root_seen {
        Ok(())
    } else {
        Err(XmlError::Empty)
    }
}

/// Parses a `<xml>…</xml>` document into its fields. Elements may come in any order; unknown
/// ones are kept; whitespace between elements is dropped, text inside leaves is kept exactly.
pub fn parse(input: &str) -> Result<Fields, XmlError> {
    let mut root = Fields::default();
    let mut stack: Vec<Frame> = Vec::new();
    walk(input, |visit| {
        match visit {
            Visit::Start(name) => {
                stack.push(Frame { name: intern(name), fields: Fields::default(), text: String::new() })
            }
            Visit::Empty(name) => {
                let parent = match stack.last_mut() {
                    Some(frame) => &mut frame.fields,
                    None => &mut root,
                };
                parent.insert(intern(name), XmlValue::Text(String::new()))?;
            }
            Visit::Text(text) => {
                if let Some(frame) = stack.last_mut() {
                    if frame.text.is_empty() {
                        frame.text = text.into_owned();
                    } else {
                        frame.text.push_str(&text);
                    }
                }
            }
            Visit::End => {
                let mut frame = stack.pop().ok_or_else(|| malformed("unexpected end tag"))?;
                let name = std::mem::take(&mut frame.name);
                let value = frame.into_value();
                match stack.last_mut() {
                    Some(parent) => parent.fields.insert(name, value)?,
                    None => root.insert(name, value)?,
                }
            }
        }
        Ok(())
    })?;
    Ok(root)
}

/// The text of the first top-level element `name` (e.g. a callback's `Encrypt`), without
/// building the tree. The whole document is still checked.
pub fn top_level_text<'a>(input: &'a str, name: &str) -> Result<Option<Cow<'a, str>>, XmlError> {
    let mut depth = 0usize;
    let mut inside = false;
    let mut found: Option<Cow<'a, str>> = None;
    let mut done = false;
    walk(input, |visit| {
        match visit {
            Visit::Start(element) => {
                depth += 1;
                inside = depth == 1 && !done && element == name;
                if inside {
                    found = Some(Cow::Borrowed(""));
                }
            }
            Visit::Empty(element) => {
                if depth == 0 && !done && element == name {
                    found = Some(Cow::Borrowed(""));
                    done = true;
                }
            }
            Visit::Text(text) => {
                if inside && depth == 1 {
                    found = Some(match found.take() {
                        Some(Cow::Borrowed("")) | None => text,
                        Some(before) => Cow::Owned(before.into_owned() + &text),
                    });
                }
            }
            Visit::End => {
                if inside && depth == 1 {
                    inside = false;
                    done = true;
                }
                depth -= 1;
            }
        }
        Ok(())
    })?;
    Ok(found)
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
        if !value.contains("]]>") {
            self.out.push_str(value);
            self.out.push_str("]]></");
            self.out.push_str(name);
            self.out.push('>');
            return self;
        }
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

    /// `<name><![CDATA[base64 of bytes]]></name>` (base64 never contains `]]>`); returns where the
    /// base64 text is in the output, e.g. to sign it.
    pub fn cdata_base64(&mut self, name: &str, bytes: &[u8]) -> std::ops::Range<usize> {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str("><![CDATA[");
        let start = self.out.len();
        base64_simd::STANDARD.encode_append(bytes, &mut self.out);
        let end = self.out.len();
        self.out.push_str("]]></");
        self.out.push_str(name);
        self.out.push('>');
        start..end
    }

    /// What has been written so far.
    pub fn as_str(&self) -> &str {
        &self.out
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
    fn errors_never_quote_document_text() {
        let err = parse("<xml><Content>Q&A session; secret words</Content></xml>").unwrap_err();
        assert!(!err.to_string().contains("session"), "{err}");
    }

    #[test]
    fn accepts_a_byte_order_mark() {
        assert_eq!(parse("\u{feff}<xml><A>x</A></xml>").unwrap().text("A"), Some("x"));
    }

    #[test]
    fn keeps_whitespace_inside_leaf_text() {
        let fields = parse("<xml><Content><![CDATA[  two  spaces \n]]></Content></xml>").unwrap();
        assert_eq!(fields.text("Content"), Some("  two  spaces \n"));
    }

    #[test]
    fn refuses_dtd_and_external_entities() {
        let xxe =
            "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml><A>&x;</A></xml>";
        assert_eq!(parse(xxe).unwrap_err(), XmlError::Dtd);
        assert!(matches!(parse("<xml><A>&x;</A></xml>").unwrap_err(), XmlError::Malformed(_)));
    }

    #[test]
    fn rejects_malformed_documents() {
        for bad in [
            "",
            "   ",
            "<xml>",
            "<xml><A></B></xml>",
            "<xml></xml><xml></xml>",
            "<root></root>",
            "text",
            "<xml><A>1</A></xml>trailing<",
        ] {
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
    fn finds_a_top_level_element_without_building_the_tree() {
        let doc = "<xml><A><Encrypt>nested</Encrypt></A>\n  <Encrypt><![CDATA[ab+/=]]></Encrypt><Encrypt>second</Encrypt></xml>";
        assert_eq!(top_level_text(doc, "Encrypt").unwrap().as_deref(), Some("ab+/="));
        assert_eq!(top_level_text("<xml><E>1 &amp; 2</E></xml>", "E").unwrap().as_deref(), Some("1 & 2"));
        assert_eq!(top_level_text("<xml><E/></xml>", "E").unwrap().as_deref(), Some(""));
        assert_eq!(top_level_text("<xml><F>x</F></xml>", "E").unwrap(), None);
        // The whole document is checked, even past the element.
        assert!(top_level_text("<xml><E>x</E><F></G></xml>", "E").is_err());
        assert_eq!(top_level_text("<!DOCTYPE x><xml><E>x</E></xml>", "E").unwrap_err(), XmlError::Dtd);
    }

    #[test]
    fn multibyte_text_and_cdata_are_sliced_exactly() {
        let fields = parse("<xml><A>你好 &lt;世界&gt; 🚀</A><B><![CDATA[家庭 👨‍👩‍👧]]></B></xml>").unwrap();
        assert_eq!(fields.text("A"), Some("你好 <世界> 🚀"));
        assert_eq!(fields.text("B"), Some("家庭 👨‍👩‍👧"));
    }

    #[test]
    fn bounds_distinct_children_but_not_repeats() {
        let distinct: String = (0..MAX_DISTINCT_CHILDREN + 1).map(|i| format!("<e{i}/>")).collect();
        assert_eq!(parse(&format!("<xml>{distinct}</xml>")).unwrap_err(), XmlError::TooWide);
        let repeats = "<Item>x</Item>".repeat(MAX_DISTINCT_CHILDREN * 4);
        let fields = parse(&format!("<xml><L>{repeats}</L></xml>")).unwrap();
        assert_eq!(
            fields.get("L").unwrap().node().unwrap().get("Item").unwrap().items().len(),
            MAX_DISTINCT_CHILDREN * 4
        );
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
