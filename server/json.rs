//! JSON text surgery that keeps every other byte: [`without_key`] removes
//! every member with one name from every object of a JSON text, at any depth.
//!
//! The broker relays Clerk's JSON as Clerk wrote it (key order, spacing,
//! number spellings, escapes), yet a caller without the scope may not see
//! `private_metadata` anywhere in it (ARCHITECTURE.md, invariant 11). Parsing
//! into `serde_json::Value` and writing it out again would sort the keys and
//! respell numbers and strings; this module instead scans the text once,
//! byte by byte, and cuts the members out.
//!
//! The scanner is iterative (an explicit stack, no recursion), so no nesting
//! depth can overflow the thread's stack, and it never panics: it checks the
//! JSON grammar as it goes and reports a [`MalformedJson`] error where the
//! text is not JSON.

use std::borrow::Cow;

#[cfg(test)]
mod tests;

/// Why a text could not be scanned: it is not JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not JSON at byte {at}: {what}")]
pub struct MalformedJson {
    /// Byte offset of the problem.
    pub at: usize,
    /// What was expected or found there.
    pub what: &'static str,
}

/// `text` without any member named `key`, in any object at any depth (a key
/// spelled with escapes, such as `"private\u005fmetadata"`, is the same key).
/// Every other byte is kept as it was; a removed member takes one comma and
/// the space before its key with it, so no stray comma is left.
///
/// Borrowed when nothing was removed. Text that is not JSON is returned
/// unchanged (it never panics): call it on text a JSON parser accepted, or use
/// [`try_without_key`] to learn that the text was malformed.
pub fn without_key<'a>(text: &'a str, key: &str) -> Cow<'a, str> {
    try_without_key(text, key).unwrap_or(Cow::Borrowed(text))
}

/// As [`without_key`], but malformed text is an error rather than returned
/// as is. Text that cannot hold the key at all (neither its characters nor
/// any escape) is returned without being scanned, hence without being
/// checked either: the error only comes where a member might have been kept.
pub fn try_without_key<'a>(text: &'a str, key: &str) -> Result<Cow<'a, str>, MalformedJson> {
    if !may_hold(text, key) {
        return Ok(Cow::Borrowed(text));
    }
    let cuts = Scanner::new(text, key).cuts()?;
    if cuts.is_empty() {
        return Ok(Cow::Borrowed(text));
    }
    let removed: usize = cuts.iter().map(|(start, end)| end - start).sum();
    let mut out = String::with_capacity(text.len() - removed);
    let mut at = 0;
    for (start, end) in cuts {
        // Cuts start and end at ASCII structural bytes: char boundaries.
        out.push_str(text.get(at..start).unwrap_or_default());
        at = end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    Ok(Cow::Owned(out))
}

/// Whether `text` may hold a member named `key`: it holds the key's text, or
/// an escape that could spell one of its characters. Any character may be
/// written `\uXXXX`; only `"`, `\`, `/` and control characters have short
/// escapes.
fn may_hold(text: &str, key: &str) -> bool {
    if text.contains(key) {
        return true;
    }
    let short_escapes = key
        .chars()
        .any(|c| matches!(c, '"' | '\\' | '/') || c.is_ascii_control());
    if short_escapes {
        text.contains('\\')
    } else {
        text.contains("\\u")
    }
}

/// What the scanner expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Any value (the top, after `:`, after `,` in an array).
    Value,
    /// A value or `]` (just after `[`).
    ValueOrEnd,
    /// A key or `}` (just after `{`).
    KeyOrEnd,
    /// A key (after `,` in an object).
    Key,
    /// `:` after a key.
    Colon,
    /// `,` or the end of the container (after a value).
    CommaOrEnd,
    /// Nothing but whitespace: the top value is complete.
    Nothing,
}

/// An open object or array.
#[derive(Debug)]
struct Frame {
    /// An object (else an array).
    object: bool,
    /// Inside a member being removed: nothing in it is cut separately.
    muted: bool,
    /// The current member of this object is being removed.
    removing: bool,
    /// Start of the first member (its key's quote).
    first_start: Option<usize>,
    /// End of the last member kept so far.
    kept_end: Option<usize>,
    /// Start of the first of the removed members since the last kept one.
    run_start: Option<usize>,
    /// End of the last member's value.
    last_end: usize,
}

/// One pass over a JSON text, collecting the byte ranges to cut.
struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    key: &'a str,
    at: usize,
    stack: Vec<Frame>,
    cuts: Vec<(usize, usize)>,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str, key: &'a str) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            key,
            at: 0,
            stack: Vec::new(),
            cuts: Vec::new(),
        }
    }

    fn error(&self, what: &'static str) -> MalformedJson {
        MalformedJson { at: self.at, what }
    }

    /// Scans the whole text; the ranges to cut, in order, not overlapping.
    fn cuts(mut self) -> Result<Vec<(usize, usize)>, MalformedJson> {
        let mut expect = Expect::Value;
        loop {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
                self.at += 1;
            }
            let Some(&byte) = self.bytes.get(self.at) else {
                return if expect == Expect::Nothing {
                    Ok(self.cuts)
                } else {
                    Err(self.error("unexpected end of the text"))
                };
            };
            expect = match expect {
                Expect::Nothing => return Err(self.error("text after the JSON value")),
                Expect::ValueOrEnd if byte == b']' => self.close(false)?,
                Expect::Value | Expect::ValueOrEnd => self.value(byte)?,
                Expect::KeyOrEnd if byte == b'}' => self.close(true)?,
                Expect::KeyOrEnd | Expect::Key => self.key(byte)?,
                Expect::Colon if byte == b':' => {
                    self.at += 1;
                    Expect::Value
                }
                Expect::Colon => return Err(self.error("expected ':' after a key")),
                Expect::CommaOrEnd => match (byte, self.stack.last().map(|f| f.object)) {
                    (b',', Some(true)) => {
                        self.at += 1;
                        Expect::Key
                    }
                    (b',', Some(false)) => {
                        self.at += 1;
                        Expect::Value
                    }
                    (b'}', Some(true)) => self.close(true)?,
                    (b']', Some(false)) => self.close(false)?,
                    _ => return Err(self.error("expected ',' or the end of the container")),
                },
            };
        }
    }

    /// Reads a value starting with `byte`.
    fn value(&mut self, byte: u8) -> Result<Expect, MalformedJson> {
        match byte {
            b'{' | b'[' => {
                let muted = self
                    .stack
                    .last()
                    .is_some_and(|parent| parent.muted || parent.removing);
                self.stack.push(Frame {
                    object: byte == b'{',
                    muted,
                    removing: false,
                    first_start: None,
                    kept_end: None,
                    run_start: None,
                    last_end: 0,
                });
                self.at += 1;
                Ok(if byte == b'{' {
                    Expect::KeyOrEnd
                } else {
                    Expect::ValueOrEnd
                })
            }
            b'"' => {
                self.string()?;
                Ok(self.value_done())
            }
            b'-' | b'0'..=b'9' => {
                self.number()?;
                Ok(self.value_done())
            }
            _ => {
                let rest = &self.bytes[self.at..];
                let literal = [&b"true"[..], b"false", b"null"]
                    .into_iter()
                    .find(|literal| rest.starts_with(literal))
                    .ok_or_else(|| self.error("expected a JSON value"))?;
                self.at += literal.len();
                Ok(self.value_done())
            }
        }
    }

    /// A value ended at `self.at`: record it in the enclosing object.
    fn value_done(&mut self) -> Expect {
        let end = self.at;
        match self.stack.last_mut() {
            None => Expect::Nothing,
            Some(frame) => {
                if frame.object {
                    frame.last_end = end;
                    if !frame.removing {
                        frame.kept_end = Some(end);
                    }
                }
                Expect::CommaOrEnd
            }
        }
    }

    /// Reads a member's key (at a `"`) and decides whether the member goes.
    fn key(&mut self, byte: u8) -> Result<Expect, MalformedJson> {
        if byte != b'"' {
            return Err(self.error("expected a key (a string)"));
        }
        let start = self.at;
        let escaped = self.string()?;
        let content = self.text.get(start + 1..self.at - 1).unwrap_or_default();
        let named = if escaped {
            decodes_to(content, self.key)
        } else {
            content == self.key
        };
        let Some(frame) = self.stack.last_mut() else {
            return Err(self.error("a key outside an object"));
        };
        frame.first_start.get_or_insert(start);
        frame.removing = named && !frame.muted;
        if frame.removing {
            frame.run_start.get_or_insert(start);
        } else if let Some(run) = frame.run_start.take() {
            // Removed members before this kept one: cut from the first of
            // them to this key, keeping the separator after the last kept
            // member (or the space after `{`).
            self.cuts.push((run, start));
        }
        Ok(Expect::Colon)
    }

    /// Closes the container at `self.at` (`}` if `object`, else `]`).
    fn close(&mut self, object: bool) -> Result<Expect, MalformedJson> {
        let Some(frame) = self.stack.pop() else {
            return Err(self.error("a closing bracket with nothing open"));
        };
        if frame.object != object {
            return Err(self.error("mismatched closing bracket"));
        }
        if let Some(run) = frame.run_start {
            // The last members go: cut from the end of the last kept member
            // (taking the comma after it), or from the first key if none is
            // kept, to the end of the last value (the space before the
            // closing brace stays).
            self.cuts
                .push((frame.kept_end.unwrap_or(run), frame.last_end));
        }
        self.at += 1;
        Ok(self.value_done())
    }

    /// Skips a string starting at its opening quote; true if it holds escapes.
    fn string(&mut self) -> Result<bool, MalformedJson> {
        let mut escaped = false;
        self.at += 1;
        loop {
            match self.bytes.get(self.at) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    match self.bytes.get(self.at + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.at += 2;
                        }
                        Some(b'u') => {
                            let digits = self.bytes.get(self.at + 2..self.at + 6);
                            if !digits.is_some_and(|d| d.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(self.error("\\u needs four hex digits"));
                            }
                            self.at += 6;
                        }
                        _ => return Err(self.error("unknown escape in a string")),
                    }
                }
                Some(byte) if *byte < 0x20 => {
                    return Err(self.error("control character in a string"));
                }
                Some(_) => self.at += 1,
            }
        }
    }

    /// Skips a number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<(), MalformedJson> {
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match self.bytes.get(self.at) {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("expected a digit")),
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            self.required_digits()?;
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            self.required_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), MalformedJson> {
        if !self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            return Err(self.error("expected a digit"));
        }
        self.digits();
        Ok(())
    }
}

/// Whether the content of a string (between its quotes, escapes valid)
/// decodes to exactly `key`. A lone surrogate matches nothing.
fn decodes_to(content: &str, key: &str) -> bool {
    let mut wanted = key.chars();
    let mut rest = content;
    while let Some(first) = rest.chars().next() {
        let (decoded, len) = if first == '\\' {
            match escape(rest) {
                Some(decoded) => decoded,
                None => return false,
            }
        } else {
            (first, first.len_utf8())
        };
        if wanted.next() != Some(decoded) {
            return false;
        }
        rest = rest.get(len..).unwrap_or_default();
    }
    wanted.next().is_none()
}

/// The character an escape at the start of `text` stands for, and the
/// escape's length; `None` for a lone surrogate.
fn escape(text: &str) -> Option<(char, usize)> {
    let short = match text.as_bytes().get(1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let high = hex4(text.get(2..6)?)?;
            if !(0xD800..0xE000).contains(&high) {
                return Some((char::from_u32(high)?, 6));
            }
            if high >= 0xDC00 || !text.get(6..)?.starts_with("\\u") {
                return None;
            }
            let low = hex4(text.get(8..12)?)?;
            if !(0xDC00..0xE000).contains(&low) {
                return None;
            }
            let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
            return Some((char::from_u32(code)?, 12));
        }
        _ => return None,
    };
    Some((short, 2))
}

/// Four hex digits as a number.
fn hex4(digits: &str) -> Option<u32> {
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}
