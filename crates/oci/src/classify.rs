//! What kind of program a file is, from its first bytes (and, for WAT, its name).

/// Enough bytes for [`classify`] to decide; read this many (or the whole file if shorter).
pub const HEADER_LEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `\0asm`, layer 0 (core module; version 1 today).
    WasmModule,
    /// `\0asm`, layer 1 (component model binary, e.g. version 0x0d).
    WasmComponent,
    /// WebAssembly text: `(module ...)` or `(component ...)`, or a `.wat` file name.
    Wat,
    /// A native ELF binary.
    Elf,
    /// A `#!` script.
    Script,
    Unknown,
}

impl Kind {
    /// Whether the wasm engine runs this kind.
    pub fn is_wasm(self) -> bool {
        matches!(self, Kind::WasmModule | Kind::WasmComponent | Kind::Wat)
    }
}

/// Classifies a file from its first bytes (see [`HEADER_LEN`]) and its name.
///
/// Binary wasm: the preamble is `\0asm` followed by a 16-bit version and a 16-bit layer; layer 0
/// is a core module, layer 1 a component. Version numbers are left to the engine to check.
pub fn classify(header: &[u8], file_name: &str) -> Kind {
    if header.len() >= 8 && header.starts_with(b"\0asm") {
        return match [header[6], header[7]] {
            [0, 0] => Kind::WasmModule,
            [1, 0] => Kind::WasmComponent,
            _ => Kind::Unknown,
        };
    }
    if header.starts_with(b"\x7fELF") {
        return Kind::Elf;
    }
    if header.starts_with(b"#!") {
        return Kind::Script;
    }
    if file_name.ends_with(".wat") || looks_like_wat(header) {
        return Kind::Wat;
    }
    Kind::Unknown
}

/// True when the text's first token, after whitespace and comments, is `(module` or
/// `(component`.
fn looks_like_wat(header: &[u8]) -> bool {
    // The header may end in the middle of a UTF-8 sequence; keep the valid prefix then.
    let text = match std::str::from_utf8(header) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&header[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(rest) = skip_blanks(text) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix('(') else {
        return false;
    };
    let Some(rest) = skip_blanks(rest) else {
        return false;
    };
    ["module", "component"].iter().any(|kw| {
        rest.strip_prefix(kw)
            .is_some_and(|after| after.chars().next().is_none_or(|c| !is_idchar(c)))
    })
}

/// Skips whitespace, `;; line` comments and (nested) `(; block ;)` comments. `None` when a
/// block comment is not closed within the text.
fn skip_blanks(mut s: &str) -> Option<&str> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix(";;") {
            s = rest.find('\n').map_or("", |i| &rest[i + 1..]);
        } else if s.starts_with("(;") {
            s = skip_block_comment(s)?;
        } else {
            return Some(s);
        }
    }
}

fn skip_block_comment(s: &str) -> Option<&str> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'(', b';') => {
                depth += 1;
                i += 2;
            }
            (b';', b')') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(&s[i..]);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Characters that may continue a WAT keyword (so `(modules` is not `(module`).
fn is_idchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-./:<=>?@\\^_`|~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_module() {
        let h = b"\0asm\x01\x00\x00\x00\x01\x04";
        assert_eq!(classify(h, "x"), Kind::WasmModule);
        assert!(Kind::WasmModule.is_wasm());
    }

    #[test]
    fn wasm_component() {
        assert_eq!(
            classify(b"\0asm\x0d\x00\x01\x00", "x.wasm"),
            Kind::WasmComponent
        );
    }

    #[test]
    fn short_or_odd_wasm_preamble_is_unknown() {
        assert_eq!(classify(b"\0asm\x01\x00", "x.wasm"), Kind::Unknown);
        assert_eq!(classify(b"\0asm\x01\x00\x07\x00", "x.wasm"), Kind::Unknown);
    }

    #[test]
    fn wat_text() {
        assert_eq!(classify(b"(module)", "a"), Kind::Wat);
        assert_eq!(classify(b"  \n(module $m (func))", "a"), Kind::Wat);
        assert_eq!(
            classify(b";; hello\n(; block (; nested ;) ;)\n( component\n", "a"),
            Kind::Wat
        );
        assert_eq!(classify(b"(modules)", "a"), Kind::Unknown);
        assert_eq!(classify(b"(; never closed", "a"), Kind::Unknown);
        // Cut in the middle of a multi-byte character is fine.
        let mut h = b";; \xc3\xa9\n(module ;; ".to_vec();
        h.extend_from_slice(&"é".as_bytes()[..1]);
        assert_eq!(classify(&h, "a"), Kind::Wat);
        // By name, whatever the content.
        assert_eq!(classify(b"", "hello.wat"), Kind::Wat);
    }

    #[test]
    fn elf_and_script() {
        assert_eq!(classify(b"\x7fELF\x02\x01\x01", "pause"), Kind::Elf);
        assert!(!Kind::Elf.is_wasm());
        assert_eq!(classify(b"#!/bin/sh\necho hi\n", "run.sh"), Kind::Script);
    }

    #[test]
    fn garbage_and_empty() {
        assert_eq!(classify(b"hello world", "app.txt"), Kind::Unknown);
        assert_eq!(classify(b"\xff\xfe\x00\x01", "blob"), Kind::Unknown);
        assert_eq!(classify(b"", "empty"), Kind::Unknown);
        assert!(!Kind::Unknown.is_wasm());
    }
}
