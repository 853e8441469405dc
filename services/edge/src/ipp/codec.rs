//! The IPP message encoding (RFC 8010 §3): a fixed header, then attribute
//! groups of tag-length-value attributes, then `end-of-attributes`.
//!
//! Written by hand (about 400 lines) instead of taking the `ipp` crate: its
//! default features pull in reqwest and rustls, and without them it still
//! brings `http`, `bytes` and two derive crates while reading into unbounded
//! structures. Here every read is bounds-checked, the number of attributes,
//! values and collection levels is capped ([`Limits`]), and every failure is
//! a [`DecodeError`] naming the offset — hostile bytes never panic.

use std::fmt;

/// IPP delimiter tags (RFC 8010 §3.5.1).
pub mod tag {
    /// operation-attributes-tag.
    pub const OPERATION: u8 = 0x01;
    /// job-attributes-tag.
    pub const JOB: u8 = 0x02;
    /// end-of-attributes-tag.
    pub const END: u8 = 0x03;
    /// printer-attributes-tag.
    pub const PRINTER: u8 = 0x04;
    /// unsupported-attributes-tag.
    pub const UNSUPPORTED_GROUP: u8 = 0x05;

    /// Out-of-band `unsupported`.
    pub const UNSUPPORTED: u8 = 0x10;
    /// Out-of-band `unknown`.
    pub const UNKNOWN: u8 = 0x12;
    /// Out-of-band `no-value`.
    pub const NO_VALUE: u8 = 0x13;
    /// integer.
    pub const INTEGER: u8 = 0x21;
    /// boolean.
    pub const BOOLEAN: u8 = 0x22;
    /// enum.
    pub const ENUM: u8 = 0x23;
    /// octetString.
    pub const OCTET_STRING: u8 = 0x30;
    /// dateTime.
    pub const DATE_TIME: u8 = 0x31;
    /// resolution.
    pub const RESOLUTION: u8 = 0x32;
    /// rangeOfInteger.
    pub const RANGE: u8 = 0x33;
    /// begCollection.
    pub const BEG_COLLECTION: u8 = 0x34;
    /// textWithLanguage.
    pub const TEXT_WITH_LANGUAGE: u8 = 0x35;
    /// nameWithLanguage.
    pub const NAME_WITH_LANGUAGE: u8 = 0x36;
    /// endCollection.
    pub const END_COLLECTION: u8 = 0x37;
    /// textWithoutLanguage.
    pub const TEXT: u8 = 0x41;
    /// nameWithoutLanguage.
    pub const NAME: u8 = 0x42;
    /// keyword.
    pub const KEYWORD: u8 = 0x44;
    /// uri.
    pub const URI: u8 = 0x45;
    /// uriScheme.
    pub const URI_SCHEME: u8 = 0x46;
    /// charset.
    pub const CHARSET: u8 = 0x47;
    /// naturalLanguage.
    pub const NATURAL_LANGUAGE: u8 = 0x48;
    /// mimeMediaType.
    pub const MIME_MEDIA_TYPE: u8 = 0x49;
    /// memberAttrName.
    pub const MEMBER_ATTR_NAME: u8 = 0x4A;
    /// Extension: the real tag follows in four octets (RFC 8010 §3.5.2).
    pub const EXTENSION: u8 = 0x7F;
}

/// Get-Printer-Attributes operation id (RFC 8011 §4.2.5).
pub const OP_GET_PRINTER_ATTRIBUTES: u16 = 0x000B;

/// Caps on what one message may contain; exceeding one is a [`DecodeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Attribute groups.
    pub max_groups: usize,
    /// Attributes, counting collection members, over the whole message.
    pub max_attributes: usize,
    /// Values of one attribute (a `1setOf`).
    pub max_values: usize,
    /// Collection nesting.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_groups: 64,
            max_attributes: 8192,
            max_values: 1024,
            max_depth: 8,
        }
    }
}

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// integer.
    Integer(i32),
    /// boolean.
    Boolean(bool),
    /// enum.
    Enum(i32),
    /// octetString (printer-supply, printer-alert: key=value text).
    OctetString(Vec<u8>),
    /// dateTime (RFC 2579 DateAndTime, 11 octets).
    DateTime([u8; 11]),
    /// resolution: cross-feed, feed, units.
    Resolution(i32, i32, u8),
    /// rangeOfInteger.
    Range(i32, i32),
    /// textWithLanguage / nameWithLanguage: tag, language, text.
    WithLanguage(u8, String, String),
    /// The string types (text, name, keyword, uri, charset, language, MIME
    /// type, uriScheme) with their tag; invalid UTF-8 is replaced.
    Str(u8, String),
    /// A collection: its member attributes.
    Collection(Vec<Attribute>),
    /// An out-of-band value (`unsupported`, `unknown`, `no-value`, …).
    OutOfBand(u8),
    /// A tag this decoder does not interpret, with its raw value.
    Other(u8, Vec<u8>),
}

impl Value {
    /// The text of string-like values (octetString decoded as UTF-8, lossy).
    pub fn as_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Value::Str(_, s) | Value::WithLanguage(_, _, s) => Some(s.as_str().into()),
            Value::OctetString(b) => Some(String::from_utf8_lossy(b)),
            _ => None,
        }
    }

    /// The number of integer and enum values.
    pub fn as_int(&self) -> Option<i32> {
        match self {
            Value::Integer(v) | Value::Enum(v) => Some(*v),
            _ => None,
        }
    }
}

/// A named attribute with one or more values.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// Attribute name.
    pub name: String,
    /// Its values (a `1setOf` has several).
    pub values: Vec<Value>,
}

impl Attribute {
    /// An attribute with these values.
    pub fn new(name: impl Into<String>, values: Vec<Value>) -> Self {
        Attribute {
            name: name.into(),
            values,
        }
    }
}

/// An attribute group: its delimiter tag and attributes in wire order.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Delimiter tag ([`tag::OPERATION`], [`tag::PRINTER`], …).
    pub tag: u8,
    /// Attributes in wire order.
    pub attributes: Vec<Attribute>,
}

/// An IPP request or response.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// version-number (major, minor).
    pub version: (u8, u8),
    /// operation-id (request) or status-code (response).
    pub code: u16,
    /// request-id.
    pub request_id: i32,
    /// Attribute groups in wire order.
    pub groups: Vec<Group>,
}

impl Message {
    /// The first attribute called `name` in a group with tag `group`.
    pub fn attribute(&self, group: u8, name: &str) -> Option<&Attribute> {
        self.groups
            .iter()
            .filter(|g| g.tag == group)
            .flat_map(|g| g.attributes.iter())
            .find(|a| a.name == name)
    }
}

/// Why bytes are not an IPP message (or break a [`Limits`] cap).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ends inside the header, a length or a value.
    #[error("truncated at byte {offset}: {what}")]
    Truncated {
        /// Where the missing bytes should have started.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// The major version is not 1 or 2.
    #[error("unsupported IPP version {major}.{minor}")]
    Version {
        /// Major version.
        major: u8,
        /// Minor version.
        minor: u8,
    },
    /// The structure is wrong (value before any group, additional value
    /// without an attribute, bad fixed-size value, unbalanced collection…).
    #[error("malformed at byte {offset}: {reason}")]
    Malformed {
        /// Offset of the offending tag.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A [`Limits`] cap was exceeded.
    #[error("limit exceeded: more than {limit} {what}")]
    Limit {
        /// Which cap.
        what: &'static str,
        /// Its value.
        limit: usize,
    },
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let truncated = DecodeError::Truncated {
            offset: self.pos,
            what,
        };
        let end = self.pos.checked_add(n).ok_or(truncated.clone())?;
        let s = self.buf.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

fn be_i32(b: &[u8]) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    i32::from_be_bytes(a)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decode one attribute value of tag `t` (not a collection).
fn scalar(t: u8, v: &[u8], offset: usize) -> Result<Value, DecodeError> {
    let bad = |reason: String| DecodeError::Malformed { offset, reason };
    let fixed = |n: usize| {
        if v.len() == n {
            Ok(())
        } else {
            Err(bad(format!(
                "value of tag {t:#04x} has {} octets, expected {n}",
                v.len()
            )))
        }
    };
    Ok(match t {
        0x10..=0x1F => Value::OutOfBand(t),
        tag::INTEGER => {
            fixed(4)?;
            Value::Integer(be_i32(v))
        }
        tag::ENUM => {
            fixed(4)?;
            Value::Enum(be_i32(v))
        }
        tag::BOOLEAN => {
            fixed(1)?;
            match v[0] {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                b => return Err(bad(format!("boolean octet {b:#04x}"))),
            }
        }
        tag::OCTET_STRING => Value::OctetString(v.to_vec()),
        tag::DATE_TIME => {
            fixed(11)?;
            let mut d = [0u8; 11];
            d.copy_from_slice(v);
            Value::DateTime(d)
        }
        tag::RESOLUTION => {
            fixed(9)?;
            Value::Resolution(be_i32(&v[0..4]), be_i32(&v[4..8]), v[8])
        }
        tag::RANGE => {
            fixed(8)?;
            Value::Range(be_i32(&v[0..4]), be_i32(&v[4..8]))
        }
        tag::TEXT_WITH_LANGUAGE | tag::NAME_WITH_LANGUAGE => {
            let mut r = Reader { buf: v, pos: 0 };
            let inner = |_: DecodeError| bad("textWithLanguage value is inconsistent".into());
            let ll = r.u16("language length").map_err(inner)?;
            let lang = r.take(usize::from(ll), "language").map_err(inner)?;
            let tl = r.u16("text length").map_err(inner)?;
            let txt = r.take(usize::from(tl), "text").map_err(inner)?;
            if r.pos != v.len() {
                return Err(bad("textWithLanguage value has trailing octets".into()));
            }
            Value::WithLanguage(t, text(lang), text(txt))
        }
        tag::TEXT
        | tag::NAME
        | tag::KEYWORD
        | tag::URI
        | tag::URI_SCHEME
        | tag::CHARSET
        | tag::NATURAL_LANGUAGE
        | tag::MIME_MEDIA_TYPE
        | tag::MEMBER_ATTR_NAME => Value::Str(t, text(v)),
        _ => Value::Other(t, v.to_vec()),
    })
}

fn push_value(values: &mut Vec<Value>, v: Value, max: usize) -> Result<(), DecodeError> {
    if values.len() >= max {
        return Err(DecodeError::Limit {
            what: "values in one attribute",
            limit: max,
        });
    }
    values.push(v);
    Ok(())
}

struct Decoder<'a> {
    r: Reader<'a>,
    limits: Limits,
    attributes: usize,
}

/// One tag-length-name-length-value item.
struct Item<'a> {
    offset: usize,
    tag: u8,
    name: &'a [u8],
    value: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn item(&mut self, tag: u8, offset: usize) -> Result<Item<'a>, DecodeError> {
        if tag == tag::EXTENSION {
            return Err(DecodeError::Malformed {
                offset,
                reason: "extended (0x7F) value tags are not supported".into(),
            });
        }
        let nl = self.r.u16("name length")?;
        let name = self.r.take(usize::from(nl), "name")?;
        let vl = self.r.u16("value length")?;
        let value = self.r.take(usize::from(vl), "value")?;
        Ok(Item {
            offset,
            tag,
            name,
            value,
        })
    }

    fn count_attribute(&mut self) -> Result<(), DecodeError> {
        self.attributes += 1;
        if self.attributes > self.limits.max_attributes {
            return Err(DecodeError::Limit {
                what: "attributes",
                limit: self.limits.max_attributes,
            });
        }
        Ok(())
    }

    /// The value of `item`, reading a whole collection when it begins one.
    fn value(&mut self, item: &Item<'a>, depth: usize) -> Result<Value, DecodeError> {
        match item.tag {
            tag::BEG_COLLECTION => self.collection(depth + 1),
            tag::END_COLLECTION | tag::MEMBER_ATTR_NAME => Err(DecodeError::Malformed {
                offset: item.offset,
                reason: format!("tag {:#04x} outside a collection", item.tag),
            }),
            t => scalar(t, item.value, item.offset),
        }
    }

    /// Members of a collection, up to and including its endCollection.
    fn collection(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > self.limits.max_depth {
            return Err(DecodeError::Limit {
                what: "collection levels",
                limit: self.limits.max_depth,
            });
        }
        let mut members: Vec<Attribute> = Vec::new();
        loop {
            let offset = self.r.pos;
            let t = self.r.u8("collection member tag")?;
            if t <= 0x0F {
                return Err(DecodeError::Malformed {
                    offset,
                    reason: "collection not closed before the next group".into(),
                });
            }
            let item = self.item(t, offset)?;
            if !item.name.is_empty() {
                return Err(DecodeError::Malformed {
                    offset,
                    reason: "named attribute inside a collection".into(),
                });
            }
            match t {
                tag::END_COLLECTION => return Ok(Value::Collection(members)),
                tag::MEMBER_ATTR_NAME => {
                    self.count_attribute()?;
                    members.push(Attribute::new(text(item.value), Vec::new()));
                }
                _ => {
                    let v = self.value(&item, depth)?;
                    let Some(member) = members.last_mut() else {
                        return Err(DecodeError::Malformed {
                            offset,
                            reason: "collection value before memberAttrName".into(),
                        });
                    };
                    push_value(&mut member.values, v, self.limits.max_values)?;
                }
            }
        }
    }

    fn message(mut self) -> Result<Message, DecodeError> {
        let major = self.r.u8("version")?;
        let minor = self.r.u8("version")?;
        if !(1..=2).contains(&major) {
            return Err(DecodeError::Version { major, minor });
        }
        let code = self.r.u16("status code")?;
        let request_id = be_i32(self.r.take(4, "request id")?);
        let mut groups: Vec<Group> = Vec::new();
        loop {
            let offset = self.r.pos;
            let t = self.r.u8("tag")?;
            if t == tag::END {
                break;
            }
            if t <= 0x0F {
                if groups.len() >= self.limits.max_groups {
                    return Err(DecodeError::Limit {
                        what: "attribute groups",
                        limit: self.limits.max_groups,
                    });
                }
                groups.push(Group {
                    tag: t,
                    attributes: Vec::new(),
                });
                continue;
            }
            let item = self.item(t, offset)?;
            if groups.is_empty() {
                return Err(DecodeError::Malformed {
                    offset,
                    reason: "attribute before any group tag".into(),
                });
            }
            let v = self.value(&item, 0)?;
            let new_attr = !item.name.is_empty();
            if new_attr {
                self.count_attribute()?;
            }
            let Some(group) = groups.last_mut() else {
                continue;
            };
            if new_attr {
                group
                    .attributes
                    .push(Attribute::new(text(item.name), vec![v]));
            } else {
                let Some(attr) = group.attributes.last_mut() else {
                    return Err(DecodeError::Malformed {
                        offset,
                        reason: "additional value without an attribute".into(),
                    });
                };
                push_value(&mut attr.values, v, self.limits.max_values)?;
            }
        }
        Ok(Message {
            version: (major, minor),
            code,
            request_id,
            groups,
        })
    }
}

/// Decode an IPP message (trailing document data after
/// `end-of-attributes` is ignored).
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Message, DecodeError> {
    Decoder {
        r: Reader { buf: bytes, pos: 0 },
        limits,
        attributes: 0,
    }
    .message()
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode {what}: {len} octets exceed 65535")]
pub struct EncodeError {
    /// What was too long.
    pub what: &'static str,
    /// Its length.
    pub len: usize,
}

fn put_len(out: &mut Vec<u8>, len: usize, what: &'static str) -> Result<(), EncodeError> {
    let l = u16::try_from(len).map_err(|_| EncodeError { what, len })?;
    out.extend_from_slice(&l.to_be_bytes());
    Ok(())
}

fn put_item(out: &mut Vec<u8>, t: u8, name: &str, value: &[u8]) -> Result<(), EncodeError> {
    out.push(t);
    put_len(out, name.len(), "attribute name")?;
    out.extend_from_slice(name.as_bytes());
    put_len(out, value.len(), "attribute value")?;
    out.extend_from_slice(value);
    Ok(())
}

fn put_value(out: &mut Vec<u8>, name: &str, v: &Value) -> Result<(), EncodeError> {
    let mut scratch = Vec::new();
    let (t, bytes): (u8, &[u8]) = match v {
        Value::Integer(i) => {
            scratch.extend_from_slice(&i.to_be_bytes());
            (tag::INTEGER, &scratch)
        }
        Value::Enum(i) => {
            scratch.extend_from_slice(&i.to_be_bytes());
            (tag::ENUM, &scratch)
        }
        Value::Boolean(b) => {
            scratch.push(u8::from(*b));
            (tag::BOOLEAN, &scratch)
        }
        Value::OctetString(b) => (tag::OCTET_STRING, b),
        Value::DateTime(d) => (tag::DATE_TIME, d),
        Value::Resolution(x, y, u) => {
            scratch.extend_from_slice(&x.to_be_bytes());
            scratch.extend_from_slice(&y.to_be_bytes());
            scratch.push(*u);
            (tag::RESOLUTION, &scratch)
        }
        Value::Range(a, b) => {
            scratch.extend_from_slice(&a.to_be_bytes());
            scratch.extend_from_slice(&b.to_be_bytes());
            (tag::RANGE, &scratch)
        }
        Value::WithLanguage(t, lang, s) => {
            put_len(&mut scratch, lang.len(), "language")?;
            scratch.extend_from_slice(lang.as_bytes());
            put_len(&mut scratch, s.len(), "text")?;
            scratch.extend_from_slice(s.as_bytes());
            (*t, &scratch)
        }
        Value::Str(t, s) => (*t, s.as_bytes()),
        Value::OutOfBand(t) => (*t, &[]),
        Value::Other(t, b) => (*t, b),
        Value::Collection(members) => {
            put_item(out, tag::BEG_COLLECTION, name, &[])?;
            for m in members {
                put_item(out, tag::MEMBER_ATTR_NAME, "", m.name.as_bytes())?;
                for mv in &m.values {
                    put_value(out, "", mv)?;
                }
            }
            return put_item(out, tag::END_COLLECTION, "", &[]);
        }
    };
    put_item(out, t, name, bytes)
}

/// Encode a message (the inverse of [`decode`] for well-formed values).
pub fn encode(m: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&[m.version.0, m.version.1]);
    out.extend_from_slice(&m.code.to_be_bytes());
    out.extend_from_slice(&m.request_id.to_be_bytes());
    for g in &m.groups {
        out.push(g.tag);
        for a in &g.attributes {
            for (i, v) in a.values.iter().enumerate() {
                put_value(&mut out, if i == 0 { &a.name } else { "" }, v)?;
            }
        }
    }
    out.push(tag::END);
    Ok(out)
}

/// IPP status-code names (RFC 8011 §B) for messages and logs.
pub fn status_name(code: u16) -> &'static str {
    match code {
        0x0000 => "successful-ok",
        0x0001 => "successful-ok-ignored-or-substituted-attributes",
        0x0002 => "successful-ok-conflicting-attributes",
        0x0400 => "client-error-bad-request",
        0x0401 => "client-error-forbidden",
        0x0402 => "client-error-not-authenticated",
        0x0403 => "client-error-not-authorized",
        0x0404 => "client-error-not-possible",
        0x0405 => "client-error-timeout",
        0x0406 => "client-error-not-found",
        0x040B => "client-error-attributes-or-values-not-supported",
        0x0500 => "server-error-internal-error",
        0x0501 => "server-error-operation-not-supported",
        0x0502 => "server-error-service-unavailable",
        0x0503 => "server-error-version-not-supported",
        0x0504 => "server-error-device-error",
        0x0505 => "server-error-temporary-error",
        0x0507 => "server-error-busy",
        c if c < 0x0100 => "successful-other",
        c if (0x0400..0x0500).contains(&c) => "client-error-other",
        c if (0x0500..0x0600).contains(&c) => "server-error-other",
        _ => "unknown-status",
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPP/{}.{} code {:#06x} request {}",
            self.version.0, self.version.1, self.code, self.request_id
        )?;
        for g in &self.groups {
            write!(f, "\n group {:#04x}", g.tag)?;
            for a in &g.attributes {
                write!(f, "\n  {} = {:?}", a.name, a.values)?;
            }
        }
        Ok(())
    }
}
