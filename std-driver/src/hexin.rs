//! Reading the input of `dmsg decode`: raw bytes, or the same bytes written as hex text.
//!
//! Hex text is hex digits (either case) separated by any amount of whitespace (space, tab, CR,
//! LF), which is what `xxd -p`, `od`-style tools without offsets, or a copy from a packet
//! viewer's "hex stream" give. Nothing else is accepted in hex text: no `0x` prefixes, no
//! offsets, no ASCII columns.
//!
//! ```
//! use dmsg_std::hexin::{load, Detected, InputFormat};
//! let (bytes, kind) = load(b"3248 0000\r\n0a0B\n".to_vec(), InputFormat::Auto).unwrap();
//! assert_eq!(bytes, [0x32, 0x48, 0x00, 0x00, 0x0a, 0x0b]);
//! assert_eq!(kind, Detected::Hex);
//! ```

use std::fmt;

/// How `dmsg decode` should interpret its input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum InputFormat {
    /// Hex text if [`is_hex_text`] says so, raw bytes otherwise.
    #[default]
    Auto,
    /// Hex text; anything else is an error (`--hex`).
    Hex,
    /// Raw bytes, even if they look like hex text (`--raw`).
    Raw,
}

/// What the input was read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Detected {
    /// Hex text, converted to bytes.
    Hex,
    /// Raw bytes, used as they are.
    Raw,
}

/// Why hex text could not be converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HexError {
    /// The text holds an odd number of hex digits, so the last byte is incomplete.
    OddDigits {
        /// Number of hex digits in the text.
        digits: usize,
        /// 1-based line of the last digit.
        line: usize,
        /// 1-based column (in bytes) of the last digit.
        column: usize,
    },
    /// A byte that is neither a hex digit nor whitespace (only possible with `--hex`).
    NotHex {
        /// The byte.
        byte: u8,
        /// Its offset in the input.
        offset: usize,
        /// 1-based line.
        line: usize,
        /// 1-based column (in bytes).
        column: usize,
    },
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HexError::OddDigits {
                digits,
                line,
                column,
            } => write!(
                f,
                "hex input has an odd number of hex digits ({digits}; the last one is at line \
                 {line}, column {column}), so its last byte is incomplete: look for a missing \
                 or an extra digit, or pass --raw if the file is binary"
            ),
            HexError::NotHex {
                byte,
                offset,
                line,
                column,
            } => {
                write!(f, "byte ")?;
                if byte.is_ascii_graphic() {
                    write!(f, "'{}' ", byte as char)?;
                }
                write!(
                    f,
                    "{byte:#04x} at offset {offset} (line {line}, column {column}) is not a hex \
                     digit or whitespace: hex input may hold only 0-9, a-f, A-F, spaces, tabs \
                     and newlines (no 0x prefixes, offsets or ASCII columns); drop --hex to read \
                     the file as raw bytes"
                )
            }
        }
    }
}

impl std::error::Error for HexError {}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True when every byte is a hex digit or whitespace (space, tab, CR, LF) and there is at least
/// one hex digit. A DMSG stream never qualifies: its first bytes are `32 48` (`"2H"`) or
/// `48 32` (`"H2"`), and `H` is not a hex digit.
pub fn is_hex_text(input: &[u8]) -> bool {
    let mut digit = false;
    for &b in input {
        if hex_value(b).is_some() {
            digit = true;
        } else if !is_space(b) {
            return false;
        }
    }
    digit
}

/// Converts hex text to bytes, ignoring whitespace.
pub fn parse_hex(input: &[u8]) -> Result<Vec<u8>, HexError> {
    let mut out = Vec::with_capacity(input.len() / 2);
    let mut high: Option<u8> = None;
    let mut digits = 0usize;
    let (mut line, mut column) = (1usize, 0usize);
    let (mut last_line, mut last_column) = (1usize, 0usize);
    for (offset, &b) in input.iter().enumerate() {
        column += 1;
        if b == b'\n' {
            line += 1;
            column = 0;
            continue;
        }
        if is_space(b) {
            continue;
        }
        let Some(v) = hex_value(b) else {
            return Err(HexError::NotHex {
                byte: b,
                offset,
                line,
                column,
            });
        };
        digits += 1;
        (last_line, last_column) = (line, column);
        match high.take() {
            Some(h) => out.push(h << 4 | v),
            None => high = Some(v),
        }
    }
    if high.is_some() {
        return Err(HexError::OddDigits {
            digits,
            line: last_line,
            column: last_column,
        });
    }
    Ok(out)
}

/// Interprets `input` as `format` says; returns the bytes and what they were read as.
pub fn load(input: Vec<u8>, format: InputFormat) -> Result<(Vec<u8>, Detected), HexError> {
    let hex = match format {
        InputFormat::Hex => true,
        InputFormat::Raw => false,
        InputFormat::Auto => is_hex_text(&input),
    };
    if hex {
        Ok((parse_hex(&input)?, Detected::Hex))
    } else {
        Ok((input, Detected::Raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_hex_text() {
        assert!(is_hex_text(b"00"));
        assert!(is_hex_text(b" 3 2\t4\r\n8 \n"));
        assert!(is_hex_text(b"abcdefABCDEF0123456789"));
        assert!(!is_hex_text(b""));
        assert!(!is_hex_text(b" \r\n\t"));
        assert!(!is_hex_text(b"0x32"));
        assert!(!is_hex_text(b"00000000: 3248"));
        assert!(!is_hex_text(&[0x32, 0x48, 0, 0]));
        // Form feed and vertical tab are not in the whitespace set.
        assert!(!is_hex_text(b"00\x0c11"));
    }

    #[test]
    fn parses_with_whitespace_anywhere_including_inside_a_byte() {
        assert_eq!(
            parse_hex(b"32 48\n00\r\n0 1").unwrap(),
            [0x32, 0x48, 0x00, 0x01]
        );
        assert_eq!(parse_hex(b"aB cD eF").unwrap(), [0xab, 0xcd, 0xef]);
        assert_eq!(parse_hex(b"").unwrap(), Vec::<u8>::new());
        assert_eq!(parse_hex(b"\n\n").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn odd_digit_count_is_an_error_that_points_at_the_last_digit() {
        let e = parse_hex(b"3248\n004").unwrap_err();
        assert_eq!(
            e,
            HexError::OddDigits {
                digits: 7,
                line: 2,
                column: 3
            }
        );
        assert!(e.to_string().contains("odd number of hex digits (7"));
    }

    #[test]
    fn non_hex_byte_is_an_error_with_its_position() {
        let e = parse_hex(b"32 48\n0x").unwrap_err();
        assert_eq!(
            e,
            HexError::NotHex {
                byte: b'x',
                offset: 7,
                line: 2,
                column: 2
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("'x' 0x78 at offset 7 (line 2, column 2)"),
            "{msg}"
        );
        let e = parse_hex(&[b'0', 0xff]).unwrap_err();
        assert!(e.to_string().starts_with("byte 0xff at offset 1"), "{e}");
    }

    #[test]
    fn load_honours_the_forced_format() {
        let text = b"3248".to_vec();
        assert_eq!(
            load(text.clone(), InputFormat::Auto).unwrap(),
            (vec![0x32, 0x48], Detected::Hex)
        );
        assert_eq!(
            load(text.clone(), InputFormat::Raw).unwrap(),
            (text.clone(), Detected::Raw)
        );
        assert_eq!(
            load(b"zz".to_vec(), InputFormat::Auto).unwrap(),
            (b"zz".to_vec(), Detected::Raw)
        );
        assert!(load(b"zz".to_vec(), InputFormat::Hex).is_err());
        assert!(load(b"123".to_vec(), InputFormat::Auto).is_err());
    }

    #[test]
    fn round_trips_every_byte_value() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let mut text = String::new();
        for (i, b) in bytes.iter().enumerate() {
            text.push_str(&format!("{b:02X}"));
            if i % 16 == 15 {
                text.push('\n');
            }
        }
        assert!(is_hex_text(text.as_bytes()));
        assert_eq!(parse_hex(text.as_bytes()).unwrap(), bytes);
    }
}
