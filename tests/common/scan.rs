//! The secret scanner behind the harness (see `mod.rs`): finds any 16-byte fragment of a known
//! secret (the whole secret when shorter) in a text, as is, hex-encoded (any case, also a hex dump
//! split over lines with offsets, ASCII columns and log prefixes, like ureq's TRACE output),
//! base64 (standard and url-safe, the three alignments, also wrapped over lines) and
//! percent-encoded.

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use std::collections::{BTreeMap, HashMap};

/// A fragment length: any this many consecutive bytes of a secret count as the secret.
pub const FRAGMENT: usize = 16;
/// Shorter secrets cannot be searched without false positives; the harness refuses them.
pub const MIN_SECRET: usize = 6;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secret {
    pub kind: String,
    pub value: String,
}

impl Secret {
    pub fn new(kind: &str, value: &str) -> Secret {
        Secret {
            kind: kind.to_string(),
            value: value.to_string(),
        }
    }
}

/// One place a secret was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: String,
    pub channel: String,
    /// `plain`, `hex`, `base64`, `base64url`, `base64 (wrapped)`, `percent-encoded`.
    pub encoding: &'static str,
    /// Byte offset in the channel's text where the encoded fragment starts.
    pub offset: usize,
    /// Which bytes of the secret the fragment is (offset into the secret, length).
    pub secret_range: (usize, usize),
    /// Up to 24 bytes before the fragment and its first 4 characters (never the whole secret).
    pub snippet: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (bytes {}..{} of it) in {}, {}, at offset {}: {}",
            self.kind,
            self.secret_range.0,
            self.secret_range.0 + self.secret_range.1,
            self.channel,
            self.encoding,
            self.offset,
            self.snippet
        )
    }
}

/// Where a window comes from: (secret index, offset in the secret, length in the secret).
type At = (usize, usize, usize);

/// Fixed-length windows, by length.
#[derive(Default)]
struct Windows {
    by_len: BTreeMap<usize, HashMap<Vec<u8>, At>>,
}

impl Windows {
    fn insert(&mut self, w: &[u8], at: At) {
        self.by_len
            .entry(w.len())
            .or_default()
            .entry(w.to_vec())
            .or_insert(at);
    }

    /// Every window of `text` in the set: (position in text, length, what).
    fn find(&self, text: &[u8]) -> Vec<(usize, usize, At)> {
        let mut out = Vec::new();
        for (&w, set) in &self.by_len {
            if text.len() < w {
                continue;
            }
            for p in 0..=text.len() - w {
                if let Some(at) = set.get(&text[p..p + w]) {
                    out.push((p, w, *at));
                }
            }
        }
        out
    }
}

/// Searches texts for a growing set of secrets.
#[derive(Default)]
pub struct Scanner {
    secrets: Vec<Secret>,
    raw: Windows,
    b64: Windows,
    b64url: Windows,
}

impl Scanner {
    pub fn new(secrets: &[Secret]) -> Scanner {
        let mut s = Scanner::default();
        for x in secrets {
            s.add(x);
        }
        s
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn contains(&self, value: &str) -> bool {
        self.secrets.iter().any(|s| s.value == value)
    }

    /// Add one secret (ignored when already known or shorter than [`MIN_SECRET`]).
    pub fn add(&mut self, secret: &Secret) {
        let v = secret.value.as_bytes();
        if v.len() < MIN_SECRET || self.contains(&secret.value) {
            return;
        }
        let i = self.secrets.len();
        self.secrets.push(secret.clone());
        let w = v.len().min(FRAGMENT);
        for p in 0..=v.len() - w {
            self.raw.insert(&v[p..p + w], (i, p, w));
        }
        // base64 of the secret starting at each alignment with the surrounding data; only whole
        // 3-byte groups (their 4 characters do not depend on the neighbours).
        for a in 0..3 {
            if v.len() <= a {
                continue;
            }
            let rest = &v[a..];
            let full = rest.len() / 3 * 3;
            if full < 6 {
                continue;
            }
            for (engine, set) in [
                (STANDARD_NO_PAD, &mut self.b64),
                (URL_SAFE_NO_PAD, &mut self.b64url),
            ] {
                let t = engine.encode(&rest[..full]);
                let t = t.as_bytes();
                let w = t.len().min(FRAGMENT);
                for p in 0..=t.len() - w {
                    set.insert(&t[p..p + w], (i, a + p * 3 / 4, (w * 3 / 4).min(v.len())));
                }
            }
        }
    }

    /// Every finding in `text`, at most one per (kind of secret, encoding): the first.
    pub fn scan(&self, channel: &str, text: &[u8]) -> Vec<Finding> {
        let mut out: Vec<Finding> = Vec::new();
        if self.secrets.is_empty() || text.is_empty() {
            return out;
        }
        let mut push = |enc: &'static str, off: usize, at: At| {
            let (i, so, sl) = at;
            out.push(Finding {
                kind: self.secrets[i].kind.clone(),
                channel: channel.to_string(),
                encoding: enc,
                offset: off,
                secret_range: (so, sl),
                snippet: snippet(text, off),
            });
        };
        // one finding per kind of secret and encoding (fake JWTs share their header, so one
        // fragment may belong to several tokens)
        let mut seen: Vec<(&str, &'static str)> = Vec::new();
        let mut once = |enc: &'static str, off: usize, at: At| {
            let kind = self.secrets[at.0].kind.as_str();
            if !seen.contains(&(kind, enc)) {
                seen.push((kind, enc));
                push(enc, off, at);
            }
        };
        for (p, _, at) in self.raw.find(text) {
            once("plain", p, at);
        }
        for (set, enc) in [(&self.b64, "base64"), (&self.b64url, "base64url")] {
            for (p, _, at) in set.find(text) {
                once(enc, p, at);
            }
        }
        // base64 wrapped over lines (PEM, MIME): whitespace removed.
        let (flat, origin) = strip_whitespace(text);
        if flat.len() != text.len() {
            for set in [&self.b64, &self.b64url] {
                for (p, _, at) in set.find(&flat) {
                    once("base64 (wrapped)", origin[p], at);
                }
            }
        }
        if text.contains(&b'%') {
            let (dec, origin) = percent_decode(text);
            for (p, w, at) in self.raw.find(&dec) {
                // only when the fragment really was encoded (else it is the plain finding)
                if origin[p + w] - origin[p] > w {
                    once("percent-encoded", origin[p], at);
                }
            }
        }
        for (bytes, origin) in hex_streams(text) {
            for (p, _, at) in self.raw.find(&bytes) {
                once("hex", origin[p], at);
            }
        }
        out
    }
}

fn snippet(text: &[u8], off: usize) -> String {
    let before = &text[off.saturating_sub(24)..off];
    let head = &text[off..(off + 4).min(text.len())];
    format!(
        "…{}⟦{}…⟧",
        String::from_utf8_lossy(before).escape_debug(),
        String::from_utf8_lossy(head).escape_debug()
    )
}

fn strip_whitespace(text: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(text.len());
    let mut origin = Vec::with_capacity(text.len());
    for (i, &b) in text.iter().enumerate() {
        if !b.is_ascii_whitespace() {
            out.push(b);
            origin.push(i);
        }
    }
    (out, origin)
}

fn hexval(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn percent_decode(text: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(text.len());
    let mut origin = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' && i + 2 < text.len() {
            if let (Some(h), Some(l)) = (hexval(text[i + 1]), hexval(text[i + 2])) {
                out.push(h << 4 | l);
                origin.push(i);
                i += 3;
                continue;
            }
        }
        out.push(text[i]);
        origin.push(i);
        i += 1;
    }
    // one extra entry so `origin[end]` exists for spans ending at the last byte
    origin.push(text.len());
    (out, origin)
}

/// Byte streams decoded from hex found in `text`:
/// 1. dump rows: per line (a leading log prefix skipped: words holding `:`, `[` or `]`, dated
///    words, level names), the runs of even-length hex groups joined by one space, comma or `\x`
///    / `0x`, or by a wider gap between groups of one width (`hexdump -C`'s middle gap); a group
///    followed by `:` is an offset, and so is a first group of another width than the next;
///    the line's largest run (the last of equals) counts, and all lines' runs are concatenated, so
///    a fragment split over rows is found whatever the ASCII column says;
/// 2. every hex string of 32+ digits on its own, at both nibble alignments.
fn hex_streams(text: &[u8]) -> Vec<(Vec<u8>, Vec<usize>)> {
    let mut streams = Vec::new();
    let mut dump = (Vec::new(), Vec::new());
    let mut start = 0;
    for raw_line in text.split(|&b| b == b'\n') {
        let line = normalize_hex_line(raw_line);
        let tokens = hex_tokens(&line);
        for &(s, e) in &tokens {
            if e - s >= 32 {
                for a in 0..2 {
                    let mut st = (Vec::new(), Vec::new());
                    decode_into(&line, s + a, e, start, &mut st);
                    streams.push(st);
                }
            }
        }
        let mut runs: Vec<Vec<(usize, usize)>> = Vec::new();
        let mut cur: Vec<(usize, usize)> = Vec::new();
        for &(s, e) in &tokens {
            let even = (e - s) % 2 == 0;
            let offset = line.get(e) == Some(&b':');
            let joined = cur.last().is_some_and(|&(ps, pe)| {
                let gap = &line[pe..s];
                gap.iter().all(|&b| b == b' ' || b == b',')
                    && (gap.len() == 1 || (gap.len() <= 4 && pe - ps == e - s))
            });
            if !joined && !cur.is_empty() {
                runs.push(std::mem::take(&mut cur));
            }
            if even && !offset {
                cur.push((s, e));
            } else if !cur.is_empty() {
                runs.push(std::mem::take(&mut cur));
            }
        }
        if !cur.is_empty() {
            runs.push(cur);
        }
        for r in &mut runs {
            if r.len() >= 3 && r[0].1 - r[0].0 != r[1].1 - r[1].0 {
                r.remove(0);
            }
        }
        let size = |r: &Vec<(usize, usize)>| r.iter().map(|(s, e)| e - s).sum::<usize>();
        let mut best: Option<&Vec<(usize, usize)>> = None;
        for r in &runs {
            if best.is_none_or(|b| size(r) >= size(b)) {
                best = Some(r);
            }
        }
        if let Some(best) = best {
            for &(s, e) in best {
                decode_into(&line, s, e, start, &mut dump);
            }
        }
        start += raw_line.len() + 1;
    }
    streams.insert(0, dump);
    streams
}

/// The line with its log prefix blanked and `\x` / `0x` before hex turned into spaces (same
/// length: offsets stay valid).
fn normalize_hex_line(line: &[u8]) -> Vec<u8> {
    let mut l = line.to_vec();
    // log prefix: leading words that are timestamps, [targets], pids: or level names
    let mut i = 0;
    loop {
        while i < l.len() && l[i] == b' ' {
            i += 1;
        }
        let end = l[i..]
            .iter()
            .position(|&b| b == b' ')
            .map_or(l.len(), |p| i + p);
        let w = &l[i..end];
        let dated = w.len() >= 8 && w.iter().any(|b| b.is_ascii_digit()) && w.contains(&b'-');
        let level = matches!(w, b"TRACE" | b"DEBUG" | b"INFO" | b"WARN" | b"ERROR");
        let marked = w.iter().any(|&b| b == b':' || b == b'[' || b == b']');
        if w.is_empty()
            || !(dated || level || marked)
            || (marked
                && w.last() == Some(&b':')
                && w.len() <= 9
                && w[..w.len() - 1].iter().all(|b| b.is_ascii_hexdigit()))
        {
            // stop at the first other word; an `xxd` offset (`00000010:`) stays (it is skipped
            // as an offset later)
            break;
        }
        for b in &mut l[i..end] {
            *b = b' ';
        }
        i = end;
    }
    let mut j = 0;
    while j + 2 < l.len() {
        let pre = (l[j] == b'\\'
            || (l[j] == b'0' && (j == 0 || !l[j - 1].is_ascii_alphanumeric())))
            && l[j + 1] == b'x'
            && l[j + 2].is_ascii_hexdigit();
        if pre {
            l[j] = b' ';
            l[j + 1] = b' ';
            j += 2;
        } else {
            j += 1;
        }
    }
    l
}

/// Maximal runs of hex digits: (start, end) in `line`.
fn hex_tokens(line: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if line[i].is_ascii_hexdigit() {
            let s = i;
            while i < line.len() && line[i].is_ascii_hexdigit() {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

fn decode_into(line: &[u8], s: usize, e: usize, base: usize, st: &mut (Vec<u8>, Vec<usize>)) {
    let mut i = s;
    while i + 1 < e {
        let (h, l) = (hexval(line[i]).unwrap(), hexval(line[i + 1]).unwrap());
        st.0.push(h << 4 | l);
        st.1.push(base + i);
        i += 2;
    }
}
