//! `--token-source file`: a JWT in a file (`--federated-token-file`, or the Azure SDK's
//! `AZURE_FEDERATED_TOKEN_FILE`): a Kubernetes projected service-account token
//! (`/var/run/secrets/azure/tokens/azure-identity-token`) or any OIDC issuer's token written by
//! something else. Re-read before every exchange: the kubelet rotates it (FACTS §11).

use std::path::PathBuf;

use super::federated::{Assertion, AssertionSource};
use crate::azure::http::Http;
use crate::error::Error;
use crate::retry::{Attempt, Deadline};

/// A token file larger than this is not a JWT (Kubernetes tokens are ~1 KiB).
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

pub struct TokenFile {
    pub path: PathBuf,
}

impl AssertionSource for TokenFile {
    fn describe(&self) -> String {
        format!("the token file {}", self.path.display())
    }

    fn assertion(&self, _http: &Http, _audience: &str, _deadline: &Deadline) -> Attempt<Assertion> {
        let fail = |detail: String, advice: &str| {
            Attempt::Fail(Error::NoToken {
                detail,
                advice: advice.to_string(),
            })
        };
        match std::fs::metadata(&self.path) {
            Ok(m) if m.len() > MAX_TOKEN_FILE_BYTES => {
                return fail(
                    format!(
                        "{} has {} bytes, too many for a token",
                        self.path.display(),
                        m.len()
                    ),
                    "point --federated-token-file at the JWT file",
                )
            }
            Ok(_) => {}
            // A projected volume can be a moment late at pod start: retry until the deadline.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Attempt::Retry {
                    reason: format!(
                        "the token file {} does not exist (yet)",
                        self.path.display()
                    ),
                    retry_after: None,
                }
            }
            Err(e) => {
                return fail(
                    format!("cannot read the token file {}: {e}", self.path.display()),
                    "check --federated-token-file and its permissions",
                )
            }
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => match Assertion::new(&text) {
                Some(a) => Attempt::Done(a),
                None => Attempt::Retry {
                    reason: format!("the token file {} is empty", self.path.display()),
                    retry_after: None,
                },
            },
            Err(e) => fail(
                format!("cannot read the token file {}: {e}", self.path.display()),
                "check --federated-token-file and its permissions",
            ),
        }
    }
}
