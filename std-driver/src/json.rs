//! A small JSON writer for one-object-per-line output (keys stay in the order written).
//!
//! Only what the CLI prints is supported: objects, strings, unsigned integers, booleans,
//! `null` and lists of strings. Strings are escaped per RFC 8259.
//!
//! ```
//! use dmsg_std::json::Object;
//! let line = Object::new().str("cmd", "LNK_PING").u64("msgid", 7).bool("ok", true).finish();
//! assert_eq!(line, r#"{"cmd":"LNK_PING","msgid":7,"ok":true}"#);
//! ```

use std::fmt::Write as _;

/// Appends `s` to `out` as a quoted JSON string.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                // Infallible: writing to a String.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON object being written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    buf: String,
}

impl Default for Object {
    fn default() -> Self {
        Object::new()
    }
}

impl Object {
    /// An empty object.
    pub fn new() -> Object {
        Object {
            buf: String::from("{"),
        }
    }

    fn key(&mut self, key: &str) {
        if self.buf.len() > 1 {
            self.buf.push(',');
        }
        write_str(&mut self.buf, key);
        self.buf.push(':');
    }

    /// Adds an unsigned integer.
    pub fn u64(mut self, key: &str, v: u64) -> Object {
        self.key(key);
        let _ = write!(self.buf, "{v}");
        self
    }

    /// Adds a boolean.
    pub fn bool(mut self, key: &str, v: bool) -> Object {
        self.key(key);
        self.buf.push_str(if v { "true" } else { "false" });
        self
    }

    /// Adds a string.
    pub fn str(mut self, key: &str, v: &str) -> Object {
        self.key(key);
        write_str(&mut self.buf, v);
        self
    }

    /// Adds a string, or `null` for `None`.
    pub fn opt_str(mut self, key: &str, v: Option<&str>) -> Object {
        match v {
            Some(s) => self.str(key, s),
            None => {
                self.key(key);
                self.buf.push_str("null");
                self
            }
        }
    }

    /// Adds a list of strings.
    pub fn str_list<'a>(mut self, key: &str, items: impl IntoIterator<Item = &'a str>) -> Object {
        self.key(key);
        self.buf.push('[');
        for (i, s) in items.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            write_str(&mut self.buf, s);
        }
        self.buf.push(']');
        self
    }

    /// Adds a nested object.
    pub fn object(mut self, key: &str, v: Object) -> Object {
        self.key(key);
        self.buf.push_str(&v.finish());
        self
    }

    /// The finished object's text.
    pub fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_rfc_8259_requires() {
        let mut s = String::new();
        write_str(&mut s, "a\"b\\c\nd\te\u{1}f\u{7f}é\r\u{8}\u{c}");
        assert_eq!(s, r#""a\"b\\c\nd\te\u0001f\u007fé\r\b\f""#);
    }

    #[test]
    fn builds_nested_objects_and_lists() {
        let o = Object::new()
            .u64("n", u64::MAX)
            .str_list("flags", ["CREATE", "REPLY"])
            .str_list("none", [])
            .opt_str("name", None)
            .object("body", Object::new().bool("x", false))
            .object("empty", Object::new())
            .finish();
        assert_eq!(
            o,
            r#"{"n":18446744073709551615,"flags":["CREATE","REPLY"],"none":[],"name":null,"body":{"x":false},"empty":{}}"#
        );
    }
}
