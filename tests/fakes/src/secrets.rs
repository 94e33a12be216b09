//! The registry of secrets the fakes hand out, for the tests' secret scanner (tests/common).
//!
//! Every fake that issues a secret (the fake IMDS's access tokens today; a fake Entra's exchanged
//! tokens, federated assertions, a pre-created machine's one-time RSA private key later) calls
//! [`register`] once per secret. In-process fakes land in a process-wide list ([`issued`]); fakes
//! that run as separate processes (the fake agent, `fake-imds`) also append one JSON line
//! `{"kind", "value"}` to the file named by [`FILE_ENV`] when it is set (the test sandbox sets it
//! for every run: [`read_file`] reads it back).

use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// Environment variable naming the registry file for out-of-process fakes.
pub const FILE_ENV: &str = "FAKE_SECRETS_FILE";

/// What a secret is (the scanner's failure message names it).
pub const ACCESS_TOKEN: &str = "ARM access token";
pub const PROXY_PASSWORD: &str = "proxy password";
pub const FEDERATED_ASSERTION: &str = "federated assertion";
pub const EXCHANGED_TOKEN: &str = "exchanged access token";
pub const PRIVATE_KEY: &str = "RSA private key";

/// One secret a fake handed out or a test set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Issued {
    pub kind: String,
    pub value: String,
}

static ISSUED: Mutex<Vec<Issued>> = Mutex::new(Vec::new());

/// Record a secret: in this process's list and, when [`FILE_ENV`] is set, in that file.
pub fn register(kind: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    let item = Issued {
        kind: kind.to_string(),
        value: value.to_string(),
    };
    {
        let mut l = ISSUED.lock().unwrap_or_else(|e| e.into_inner());
        if !l.contains(&item) {
            l.push(item);
        }
    }
    if let Some(path) = std::env::var_os(FILE_ENV).filter(|p| !p.is_empty()) {
        register_in_file(Path::new(&path), kind, value);
    }
}

/// Append one secret to a registry file (one `write` per line: concurrent writers do not mix).
pub fn register_in_file(path: &Path, kind: &str, value: &str) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let mut line = json!({ "kind": kind, "value": value }).to_string();
        line.push('\n');
        let _ = f.write_all(line.as_bytes());
    }
}

/// Every secret registered in this process so far.
pub fn issued() -> Vec<Issued> {
    ISSUED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The secrets in a registry file (missing file: none).
pub fn read_file(path: &Path) -> Vec<Issued> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            Some(Issued {
                kind: v["kind"].as_str()?.to_string(),
                value: v["value"].as_str()?.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lists_and_file_round_trip() {
        register(ACCESS_TOKEN, "tok-registry-test-0123456789");
        register(ACCESS_TOKEN, "tok-registry-test-0123456789");
        let n = issued()
            .iter()
            .filter(|i| i.value == "tok-registry-test-0123456789")
            .count();
        assert_eq!(n, 1);
        let dir = std::env::temp_dir().join(format!("fake-secrets-test-{}", std::process::id()));
        let f = dir.join("secrets.jsonl");
        register_in_file(&f, PRIVATE_KEY, "-----BEGIN PRIVATE KEY-----\nabc\n");
        register_in_file(&f, PROXY_PASSWORD, "p@ss:w/rd%");
        let got = read_file(&f);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].value, "-----BEGIN PRIVATE KEY-----\nabc\n");
        assert_eq!(got[1].kind, PROXY_PASSWORD);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
