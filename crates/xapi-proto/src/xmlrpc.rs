//! XAPI's XML-RPC wire: `POST /` with a `methodCall`, answered with a
//! `methodResponse` whose one parameter is a struct: `{Status: "Success",
//! Value: ...}` or `{Status: "Failure", ErrorDescription: [CODE, params...]}`.
//!
//! A call is turned into the same method name and JSON parameters a
//! JSON-RPC call carries, so both wires share one dispatch and answer every
//! method alike. The encoding follows XAPI's: strings, refs and enums are
//! untyped `<value>`s, **integers are sent as strings** (XML-RPC's `<int>`
//! is 32 bits; XAPI's int64 fields are not), booleans `<boolean>`, floats
//! `<double>`, sets `<array>`, maps and records `<struct>`. Going in,
//! `<int>`, `<i4>` and `<i8>` become numbers and everything else a string,
//! boolean, array or object; the dispatch takes an integer given as a
//! string, as XAPI does.
//!
//! The parser is quick-xml's pull reader with our grammar on top: no DOCTYPE
//! (so no entity can expand), only XML's own entities and character
//! references, at most [`MAX_DEPTH`] nested arrays and structs. A body that
//! is not a call gets an XML-RPC `<fault>` ([`encode_fault`]).

use std::fmt::Write as _;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The deepest nesting of arrays and structs a call may have.
pub const MAX_DEPTH: usize = 64;

/// A parsed `methodCall`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    pub params: Vec<Value>,
}

/// Why a body is not an XML-RPC call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Not well-formed XML (or XML this server refuses: a DOCTYPE).
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// XML, but not the shape of an XML-RPC call.
    #[error("not an XML-RPC call: {0}")]
    Invalid(String),
    /// Arrays and structs nested deeper than [`MAX_DEPTH`].
    #[error("values nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

impl CallError {
    /// The fault code of the answer (the values xmlrpc-epi's
    /// "specification for fault code interoperability" gives).
    pub fn fault_code(&self) -> i32 {
        match self {
            CallError::Xml(_) => -32700,
            CallError::Invalid(_) | CallError::TooDeep => -32600,
        }
    }
}

/// One step of the reader: an element opening (`empty` when it closes at
/// once), an element closing, or text.
#[derive(Debug)]
enum Step {
    Open { name: String, empty: bool },
    Close(String),
    Text(String),
    Eof,
}

struct Parser<'a> {
    reader: Reader<&'a [u8]>,
    /// A step read ahead and not yet used.
    peeked: Option<Step>,
}

fn tag(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.name().as_ref()).into_owned()
}

impl<'a> Parser<'a> {
    fn new(body: &'a [u8]) -> Parser<'a> {
        let reader = Reader::from_reader(body);
        Parser { reader, peeked: None }
    }

    fn step(&mut self) -> Result<Step, CallError> {
        if let Some(s) = self.peeked.take() {
            return Ok(s);
        }
        loop {
            let event = self.reader.read_event().map_err(|e| CallError::Xml(e.to_string()))?;
            return Ok(match event {
                Event::Start(e) => Step::Open {
                    name: tag(&e),
                    empty: false,
                },
                Event::Empty(e) => Step::Open {
                    name: tag(&e),
                    empty: true,
                },
                Event::End(e) => Step::Close(String::from_utf8_lossy(e.name().as_ref()).into_owned()),
                Event::Text(t) => Step::Text(t.unescape().map_err(|e| CallError::Xml(e.to_string()))?.into_owned()),
                Event::CData(c) => Step::Text(String::from_utf8_lossy(&c.into_inner()).into_owned()),
                Event::DocType(_) => return Err(CallError::Xml("a DOCTYPE is not allowed".into())),
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => continue,
                Event::Eof => Step::Eof,
            });
        }
    }

    /// The next step that is not whitespace between elements.
    fn structural(&mut self) -> Result<Step, CallError> {
        loop {
            match self.step()? {
                Step::Text(t) if t.trim().is_empty() => continue,
                s => return Ok(s),
            }
        }
    }

    fn peek_structural(&mut self) -> Result<&Step, CallError> {
        let s = self.structural()?;
        Ok(self.peeked.insert(s))
    }

    /// An element `name` opens: true when it is empty (`<name/>`).
    fn open(&mut self, name: &str) -> Result<bool, CallError> {
        match self.structural()? {
            Step::Open { name: n, empty } if n == name => Ok(empty),
            other => Err(CallError::Invalid(format!(
                "expected <{name}>, found {}",
                describe(&other)
            ))),
        }
    }

    fn close(&mut self, name: &str) -> Result<(), CallError> {
        match self.structural()? {
            Step::Close(n) if n == name => Ok(()),
            other => Err(CallError::Invalid(format!(
                "expected </{name}>, found {}",
                describe(&other)
            ))),
        }
    }

    /// The text up to the element's end (`</name>`), which it consumes.
    fn text_until_close(&mut self, name: &str) -> Result<String, CallError> {
        let mut text = String::new();
        loop {
            match self.step()? {
                Step::Text(t) => text.push_str(&t),
                Step::Close(n) if n == name => return Ok(text),
                other => {
                    return Err(CallError::Invalid(format!(
                        "expected text in <{name}>, found {}",
                        describe(&other)
                    )))
                }
            }
        }
    }

    fn call(&mut self) -> Result<Call, CallError> {
        if self.open("methodCall")? {
            return Err(CallError::Invalid("an empty <methodCall>".into()));
        }
        if self.open("methodName")? {
            return Err(CallError::Invalid("an empty <methodName>".into()));
        }
        let method = self.text_until_close("methodName")?.trim().to_string();
        let mut params = Vec::new();
        let has_params = matches!(self.peek_structural()?, Step::Open { name, .. } if name == "params");
        if has_params && !self.open("params")? {
            loop {
                match self.structural()? {
                    Step::Open { name, empty: false } if name == "param" => {
                        params.push(self.value(0)?);
                        self.close("param")?;
                    }
                    Step::Close(n) if n == "params" => break,
                    other => {
                        return Err(CallError::Invalid(format!(
                            "expected <param>, found {}",
                            describe(&other)
                        )))
                    }
                }
            }
        }
        self.close("methodCall")?;
        match self.structural()? {
            Step::Eof => Ok(Call { method, params }),
            other => Err(CallError::Invalid(format!("{} after the call", describe(&other)))),
        }
    }

    /// One `<value>`.
    fn value(&mut self, depth: usize) -> Result<Value, CallError> {
        if depth > MAX_DEPTH {
            return Err(CallError::TooDeep);
        }
        if self.open("value")? {
            return Ok(Value::String(String::new()));
        }
        // Text first: an untyped string, unless only whitespace before a
        // typed element.
        let mut text = String::new();
        loop {
            match self.step()? {
                Step::Text(t) => text.push_str(&t),
                Step::Close(n) if n == "value" => return Ok(Value::String(text)),
                Step::Open { name, empty } if text.trim().is_empty() => {
                    let v = self.typed(&name, empty, depth)?;
                    self.close("value")?;
                    return Ok(v);
                }
                other => {
                    return Err(CallError::Invalid(format!(
                        "expected a value, found {}",
                        describe(&other)
                    )))
                }
            }
        }
    }

    /// The typed element `<name>` inside a `<value>`, its start read.
    fn typed(&mut self, name: &str, empty: bool, depth: usize) -> Result<Value, CallError> {
        let text = |p: &mut Self| -> Result<String, CallError> {
            match empty {
                true => Ok(String::new()),
                false => p.text_until_close(name),
            }
        };
        Ok(match name {
            "string" | "dateTime.iso8601" | "base64" => Value::String(text(self)?),
            "int" | "i4" | "i8" => {
                let t = text(self)?;
                let n: i64 = t
                    .trim()
                    .parse()
                    .map_err(|_| CallError::Invalid(format!("<{name}>{t}</{name}> is not an integer")))?;
                Value::from(n)
            }
            "boolean" => match text(self)?.trim() {
                "1" => Value::Bool(true),
                "0" => Value::Bool(false),
                t => return Err(CallError::Invalid(format!("<boolean>{t}</boolean> is not 0 or 1"))),
            },
            "double" => {
                let t = text(self)?;
                let f: f64 = t
                    .trim()
                    .parse()
                    .map_err(|_| CallError::Invalid(format!("<double>{t}</double> is not a number")))?;
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| CallError::Invalid(format!("<double>{t}</double> is not finite")))?
            }
            "nil" => {
                if !empty {
                    self.close("nil")?;
                }
                Value::Null
            }
            "array" => {
                let mut items = Vec::new();
                if !empty {
                    if !self.open("data")? {
                        loop {
                            match self.peek_structural()? {
                                Step::Close(n) if n == "data" => break,
                                _ => items.push(self.value(depth + 1)?),
                            }
                        }
                        self.close("data")?;
                    }
                    self.close("array")?;
                }
                Value::Array(items)
            }
            "struct" => {
                let mut map = Map::new();
                if !empty {
                    loop {
                        match self.structural()? {
                            Step::Close(n) if n == "struct" => break,
                            Step::Open { name, empty: false } if name == "member" => {
                                let key = match self.open("name")? {
                                    true => String::new(),
                                    false => self.text_until_close("name")?,
                                };
                                let v = self.value(depth + 1)?;
                                self.close("member")?;
                                map.insert(key, v);
                            }
                            other => {
                                return Err(CallError::Invalid(format!(
                                    "expected <member>, found {}",
                                    describe(&other)
                                )))
                            }
                        }
                    }
                }
                Value::Object(map)
            }
            other => return Err(CallError::Invalid(format!("unknown value type <{other}>"))),
        })
    }
}

fn describe(s: &Step) -> String {
    match s {
        Step::Open { name, .. } => format!("<{name}>"),
        Step::Close(name) => format!("</{name}>"),
        Step::Text(t) => format!("text {:?}", t.chars().take(40).collect::<String>()),
        Step::Eof => "the end of the body".into(),
    }
}

/// Parse a request body.
pub fn parse_call(body: &[u8]) -> Result<Call, CallError> {
    Parser::new(body).call()
}

const HEAD: &str = "<?xml version=\"1.0\"?><methodResponse><params><param>";
const TAIL: &str = "</param></params></methodResponse>";

/// Encode a successful result: `{Status: "Success", Value: value}`.
pub fn encode_success(value: &Value) -> Vec<u8> {
    let mut out = String::from(HEAD);
    out.push_str("<value><struct><member><name>Status</name><value>Success</value></member>");
    out.push_str("<member><name>Value</name>");
    write_value(&mut out, value);
    out.push_str("</member></struct></value>");
    out.push_str(TAIL);
    out.into_bytes()
}

/// Encode an API error: `{Status: "Failure", ErrorDescription: [CODE, params...]}`.
pub fn encode_failure(err: &ApiError) -> Vec<u8> {
    let mut out = String::from(HEAD);
    out.push_str("<value><struct><member><name>Status</name><value>Failure</value></member>");
    out.push_str("<member><name>ErrorDescription</name>");
    let description: Vec<Value> = err.to_strings().into_iter().map(Value::String).collect();
    write_value(&mut out, &Value::Array(description));
    out.push_str("</member></struct></value>");
    out.push_str(TAIL);
    out.into_bytes()
}

/// Encode an XML-RPC fault, for a body that is not a call.
pub fn encode_fault(err: &CallError) -> Vec<u8> {
    let mut out = String::from("<?xml version=\"1.0\"?><methodResponse><fault><value><struct>");
    let _ = write!(
        out,
        "<member><name>faultCode</name><value><int>{}</int></value></member>",
        err.fault_code()
    );
    out.push_str("<member><name>faultString</name>");
    write_value(&mut out, &Value::String(err.to_string()));
    out.push_str("</member></struct></value></fault></methodResponse>");
    out.into_bytes()
}

/// One `<value>` in XAPI's encoding, as text (what XAPI keeps in a task's
/// `result`).
pub fn encode_value(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

/// One value in XAPI's encoding.
fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("<value></value>"),
        Value::Bool(b) => {
            let _ = write!(out, "<value><boolean>{}</boolean></value>", u8::from(*b));
        }
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            let _ = write!(out, "<value>{n}</value>");
        }
        Value::Number(n) => {
            let _ = write!(out, "<value><double>{}</double></value>", n.as_f64().unwrap_or(0.0));
        }
        Value::String(s) => {
            out.push_str("<value>");
            write_text(out, s);
            out.push_str("</value>");
        }
        Value::Array(items) => {
            out.push_str("<value><array><data>");
            for i in items {
                write_value(out, i);
            }
            out.push_str("</data></array></value>");
        }
        Value::Object(map) => {
            out.push_str("<value><struct>");
            for (k, v) in map {
                out.push_str("<member><name>");
                write_text(out, k);
                out.push_str("</name>");
                write_value(out, v);
                out.push_str("</member>");
            }
            out.push_str("</struct></value>");
        }
    }
}

/// Text escaped for XML; a carriage return as a character reference, since
/// an XML parser reads a raw one as a newline.
fn write_text(out: &mut String, s: &str) {
    let escaped = quick_xml::escape::escape(s);
    if escaped.contains('\r') {
        out.push_str(&escaped.replace('\r', "&#13;"));
    } else {
        out.push_str(&escaped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(params: &str) -> String {
        format!("<?xml version='1.0'?>\n<methodCall>\n<methodName>VM.set_memory</methodName>\n<params>{params}</params>\n</methodCall>\n")
    }

    fn param(v: &str) -> String {
        format!("<param>\n<value>{v}</value>\n</param>\n")
    }

    #[test]
    fn a_python_xmlrpc_call_parses_into_json_parameters() {
        // What Python's xmlrpc.client sends for
        // (session, ref, 42, True, 1.5, None, [..], {..}, "a&b").
        let body = call(
            &[
                param("<string>OpaqueRef:s</string>"),
                param("OpaqueRef:v"),
                param("<int>42</int>"),
                param("<boolean>1</boolean>"),
                param("<double>1.5</double>"),
                param("<nil/>"),
                param("<array><data>\n<value><string>x</string></value>\n<value><i8>-3</i8></value>\n</data></array>"),
                param("<struct>\n<member>\n<name>k</name>\n<value><string>v</string></value>\n</member>\n</struct>"),
                param("<string>a&amp;b &lt;&#65;&gt;</string>"),
                param(""),
                param("<string/>"),
                param("<array><data/></array>"),
            ]
            .concat(),
        );
        let c = parse_call(body.as_bytes()).unwrap();
        assert_eq!(c.method, "VM.set_memory");
        assert_eq!(
            Value::Array(c.params),
            json!([
                "OpaqueRef:s",
                "OpaqueRef:v",
                42,
                true,
                1.5,
                null,
                ["x", -3],
                {"k": "v"},
                "a&b <A>",
                "",
                "",
                []
            ])
        );
    }

    #[test]
    fn a_call_without_params_and_untyped_whitespace_strings() {
        let c = parse_call(b"<methodCall><methodName>system.listMethods</methodName></methodCall>").unwrap();
        assert_eq!((c.method.as_str(), c.params.len()), ("system.listMethods", 0));
        let c = parse_call(call(&param("  two words ")).as_bytes()).unwrap();
        assert_eq!(c.params, vec![json!("  two words ")]);
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        let bad: &[(&str, &str)] = &[
            ("", "expected <methodCall>"),
            ("{\"method\": 1}", "expected <methodCall>"),
            ("<methodCall><methodName>x</methodName>", "</methodCall>"),
            ("<methodCall><methodName>x</methodName></methodCall><extra/>", "after the call"),
            ("<methodCall><methodName>x</methodName><params><param><value><int>x</int></value></param></params></methodCall>", "not an integer"),
            ("<methodCall><methodName>x</methodName><params><param><value><boolean>2</boolean></value></param></params></methodCall>", "not 0 or 1"),
            ("<methodCall><methodName>x</methodName><params><param><value><double>inf</double></value></param></params></methodCall>", "not finite"),
            ("<methodCall><methodName>x</methodName><params><param><value><blob/></value></param></params></methodCall>", "unknown value type"),
            ("<methodCall><methodName>x</methodName><params><param><value>&unknown;</value></param></params></methodCall>", "not well-formed"),
        ];
        for (body, why) in bad {
            let e = parse_call(body.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{body}: {e}");
        }
    }

    #[test]
    fn no_entity_is_ever_expanded_and_nesting_is_bounded() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;\">]>\
            <methodCall><methodName>&lol2;</methodName></methodCall>";
        assert_eq!(
            parse_call(bomb.as_bytes()),
            Err(CallError::Xml("a DOCTYPE is not allowed".into()))
        );
        let deep = |n: usize| {
            call(&param(&format!(
                "{}<string>x</string>{}",
                "<array><data><value>".repeat(n),
                "</value></data></array>".repeat(n)
            )))
        };
        assert!(parse_call(deep(MAX_DEPTH).as_bytes()).is_ok());
        assert_eq!(parse_call(deep(MAX_DEPTH + 1).as_bytes()), Err(CallError::TooDeep));
        // A hundred thousand levels: refused, not a stack overflow.
        assert_eq!(parse_call(deep(100_000).as_bytes()), Err(CallError::TooDeep));
    }

    #[test]
    fn answers_are_in_xapis_encoding() {
        let ok = String::from_utf8(encode_success(&json!({
            "uuid": "u<1>",
            "memory": 4294967296i64,
            "ha": true,
            "load": 0.5,
            "tags": ["a"],
            "other": {},
        })))
        .unwrap();
        assert!(ok.starts_with("<?xml version=\"1.0\"?><methodResponse><params><param><value><struct>"));
        assert!(ok.contains("<member><name>Status</name><value>Success</value></member>"));
        assert!(ok.contains("<member><name>memory</name><value>4294967296</value></member>"));
        assert!(ok.contains("<member><name>uuid</name><value>u&lt;1&gt;</value></member>"));
        assert!(ok.contains("<value><boolean>1</boolean></value>"));
        assert!(ok.contains("<value><double>0.5</double></value>"));
        assert!(ok.contains("<value><array><data><value>a</value></data></array></value>"));
        assert!(ok.contains("<member><name>other</name><value><struct></struct></value></member>"));
        let err = String::from_utf8(encode_failure(&ApiError::new(
            "HANDLE_INVALID",
            vec!["VM".into(), "x".into()],
        )))
        .unwrap();
        assert!(err.contains("<value>Failure</value>"));
        assert!(err.contains(
            "<name>ErrorDescription</name><value><array><data><value>HANDLE_INVALID</value><value>VM</value><value>x</value></data></array></value>"
        ));
        let fault = String::from_utf8(encode_fault(&CallError::TooDeep)).unwrap();
        assert!(fault.contains("<fault>") && fault.contains("<int>-32600</int>"));
    }

    #[test]
    fn what_it_encodes_it_parses_back() {
        let v = json!({"a": ["x", {"b": "y & z"}], "c": ""});
        let body = String::from_utf8(encode_success(&v)).unwrap();
        // Read the response's one value with the call parser's value reader.
        let inner = body.strip_prefix(HEAD).and_then(|b| b.strip_suffix(TAIL)).unwrap();
        let mut p = Parser::new(inner.as_bytes());
        let parsed = p.value(0).unwrap();
        assert_eq!(parsed["Value"], v);
        assert_eq!(parsed["Status"], "Success");
    }

    /// Text without the characters XML 1.0 cannot carry.
    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        "[\\t\\n\\r -\\u{D7FF}\\u{E000}-\\u{FFFD}]{0,12}"
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            text().prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(text(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any bytes: an answer or a reason, never a panic.
        #[test]
        fn any_body_parses_or_is_refused(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_call(&body);
        }

        /// A valid call cut anywhere or with one byte changed: the same.
        #[test]
        fn a_damaged_call_parses_or_is_refused(v in json_value(), cut in 0usize..4096, at in 0usize..4096, byte in proptest::prelude::any::<u8>()) {
            let answer = encode_success(&v);
            let inner = std::str::from_utf8(&answer).unwrap().strip_prefix(HEAD).unwrap().strip_suffix(TAIL).unwrap();
            let mut body = format!("<methodCall><methodName>m</methodName><params><param>{inner}</param></params></methodCall>").into_bytes();
            let _ = parse_call(&body[..cut.min(body.len())]);
            let n = body.len();
            body[at % n] = byte;
            let _ = parse_call(&body);
        }

        /// Strings, booleans, nulls, arrays and structs travel intact (a
        /// null comes back as the empty string, as XAPI sends it).
        #[test]
        fn values_round_trip(v in json_value()) {
            fn nulls_as_empty(v: &Value) -> Value {
                match v {
                    Value::Null => Value::String(String::new()),
                    Value::Array(a) => Value::Array(a.iter().map(nulls_as_empty).collect()),
                    Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), nulls_as_empty(v))).collect()),
                    other => other.clone(),
                }
            }
            let answer = encode_success(&v);
            let inner = std::str::from_utf8(&answer).unwrap().strip_prefix(HEAD).unwrap().strip_suffix(TAIL).unwrap();
            let parsed = Parser::new(inner.as_bytes()).value(0).unwrap();
            proptest::prop_assert_eq!(&parsed["Value"], &nulls_as_empty(&v));
        }
    }
}
