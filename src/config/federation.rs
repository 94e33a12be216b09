//! The settings of workload identity federation (`--token-source gcp|aws|file|github`, CONTRACT
//! §6): resolved with the same precedence as the rest, plus the Azure SDK's conventions
//! (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`,
//! read only when a federated source is chosen) and GitHub Actions' `ACTIONS_ID_TOKEN_REQUEST_URL`
//! and `_TOKEN`. Everything a federated source needs and cannot find fails here, before any
//! network call (exit 2).

use std::fmt;
use std::path::PathBuf;

use super::resolve::{Cand, Resolver};
use super::{Cloud, Identity, Sourced, TokenSourceKind};
use crate::error::Error;

pub const DEFAULT_GCP_METADATA_ENDPOINT: &str = "http://metadata.google.internal";
pub const DEFAULT_AWS_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// GitHub Actions' request token: a secret (it can mint ID tokens for the job), so no `Debug` of
/// its value.
#[derive(Clone)]
pub struct RequestToken(String);

impl RequestToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RequestToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestToken(<redacted, {} bytes>)", self.0.len())
    }
}

/// Where a GitHub Actions job asks for its ID token.
#[derive(Clone, Debug)]
pub struct GithubRequest {
    pub url: Sourced<String>,
    pub token: RequestToken,
}

/// What the federated sources need; defaults when the source is `imds`.
#[derive(Clone, Debug)]
pub struct Federation {
    /// The Entra authority, `https://login.microsoftonline.com` for the public cloud.
    pub authority_host: Sourced<String>,
    /// `--token-source file`: the JWT file, re-read before every exchange.
    pub token_file: Option<Sourced<PathBuf>>,
    pub gcp_metadata_endpoint: Sourced<String>,
    pub aws_imds_endpoint: Sourced<String>,
    /// `None`: `https://sts.<region>.amazonaws.com`, the region from the instance identity document.
    pub aws_sts_endpoint: Option<Sourced<String>>,
    pub github: Option<GithubRequest>,
}

impl Federation {
    pub fn log_sources(&self, kind: TokenSourceKind, kind_source: &str) {
        log::info!(
            "setting token_source = {} (from {kind_source}); authority_host = {} (from {})",
            kind.name(),
            self.authority_host.value,
            self.authority_host.source
        );
        match kind {
            TokenSourceKind::File => {
                if let Some(f) = &self.token_file {
                    log::info!(
                        "setting federated_token_file = {} (from {})",
                        f.value.display(),
                        f.source
                    );
                }
            }
            TokenSourceKind::Gcp => log::info!(
                "setting gcp_metadata_endpoint = {} (from {})",
                self.gcp_metadata_endpoint.value,
                self.gcp_metadata_endpoint.source
            ),
            TokenSourceKind::Aws => {
                log::info!(
                    "setting aws_imds_endpoint = {} (from {})",
                    self.aws_imds_endpoint.value,
                    self.aws_imds_endpoint.source
                );
                if let Some(s) = &self.aws_sts_endpoint {
                    log::info!("setting aws_sts_endpoint = {} (from {})", s.value, s.source);
                }
            }
            TokenSourceKind::Github => {
                if let Some(g) = &self.github {
                    log::info!("GitHub Actions ID-token endpoint from {}", g.url.source);
                }
            }
            TokenSourceKind::Imds => {}
        }
    }
}

/// `--token-source github` fetches its token with the job's variables: without them (outside a
/// job) `connect`, `token` and `check` cannot start (exit 2); `user-data` does not need them.
pub fn require_github_job(kind: TokenSourceKind, fed: &Federation) -> Result<(), Error> {
    if kind == TokenSourceKind::Github && fed.github.is_none() {
        return Err(Error::invalid(
            "token_source",
            "github",
            "the environment",
            "ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not both set: run inside a \
             GitHub Actions job with `permissions: id-token: write`",
        ));
    }
    Ok(())
}

impl Resolver<'_> {
    /// An Azure SDK variable, only for federated sources (an AKS pod's `AZURE_CLIENT_ID` must not
    /// change which identity IMDS is asked for).
    pub(super) fn azure_sdk_env(&self, kind: TokenSourceKind, name: &str) -> Cand {
        if !kind.is_federated() {
            return None;
        }
        self.env
            .get(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| {
                (
                    v.clone(),
                    format!("environment {name} (Azure SDK convention)"),
                )
            })
    }

    pub(super) fn token_source(&self) -> Result<Sourced<TokenSourceKind>, Error> {
        let c = self
            .flag("token_source", &self.opts.token_source)
            .or_else(|| self.file("token_source", &self.file.token_source));
        match c {
            None => Ok(Sourced::new(TokenSourceKind::Imds, "default")),
            Some((v, src)) => match TokenSourceKind::parse(&v) {
                Some(k) => Ok(Sourced::new(k, src)),
                None => Err(Error::invalid(
                    "token_source",
                    v,
                    src,
                    "must be imds, gcp, aws, file or github",
                )),
            },
        }
    }

    /// The identity; a federated source needs the user-assigned identity's client id (the
    /// exchange names it; a resource id or object id cannot be exchanged for).
    pub(super) fn identity_for(&self, kind: TokenSourceKind) -> Result<Sourced<Identity>, Error> {
        let id = self.identity()?;
        if !kind.is_federated() {
            return Ok(id);
        }
        match &id.value {
            Identity::ClientId(_) => Ok(id),
            Identity::SystemAssigned => match self.azure_sdk_env(kind, "AZURE_CLIENT_ID") {
                Some((v, s)) => {
                    super::validate_guid(&v).map_err(|e| Error::invalid("client_id", &v, &s, e))?;
                    Ok(Sourced::new(
                        Identity::ClientId(v.trim().to_ascii_lowercase()),
                        s,
                    ))
                }
                None => Err(Error::invalid(
                    "client_id",
                    "",
                    "nowhere",
                    format!(
                        "--token-source {} exchanges the machine's token for a user-assigned identity's, \
                         which needs that identity's client id: set --client-id, ARC_ENROLL_CLIENT_ID or \
                         AZURE_CLIENT_ID (`az identity show -g RG -n NAME --query clientId -o tsv`)",
                        kind.name()
                    ),
                )),
            },
            other => Err(Error::invalid(
                "client_id",
                other.describe(),
                &id.source,
                format!(
                    "--token-source {} needs the user-assigned identity's client id (--client-id), not \
                     its resource or object id",
                    kind.name()
                ),
            )),
        }
    }

    pub(super) fn federation(
        &self,
        kind: TokenSourceKind,
        cloud: &Sourced<Cloud>,
        tenant_id: &Option<Sourced<String>>,
        _identity: &Sourced<Identity>,
        resource_name: &Sourced<String>,
    ) -> Result<Federation, Error> {
        let o = self.opts;
        let f = &self.file;
        let authority_host = match self
            .flag("authority_host", &o.authority_host)
            .or_else(|| self.azure_sdk_env(kind, "AZURE_AUTHORITY_HOST"))
            .or_else(|| self.file("authority_host", &f.authority_host))
        {
            Some((v, src)) => {
                let t = v.trim().trim_end_matches('/').to_string();
                if !t.to_ascii_lowercase().starts_with("https://")
                    || crate::azure::proxy::split_url(&t).is_none()
                {
                    return Err(Error::invalid(
                        "authority_host",
                        v,
                        src,
                        "must be an https:// URL (the assertion and the token travel through it)",
                    ));
                }
                Sourced::new(t, src)
            }
            None => Sourced::new(
                cloud.value.authority_host().to_string(),
                format!("default for {}", cloud.value.name()),
            ),
        };
        let gcp_metadata_endpoint = self.url_setting(
            "gcp_metadata_endpoint",
            &o.gcp_metadata_endpoint,
            &f.gcp_metadata_endpoint,
            DEFAULT_GCP_METADATA_ENDPOINT,
        )?;
        let aws_imds_endpoint = self.url_setting(
            "aws_imds_endpoint",
            &o.aws_imds_endpoint,
            &f.aws_imds_endpoint,
            DEFAULT_AWS_IMDS_ENDPOINT,
        )?;
        let aws_sts_endpoint = match self
            .flag("aws_sts_endpoint", &o.aws_sts_endpoint)
            .or_else(|| self.file("aws_sts_endpoint", &f.aws_sts_endpoint))
        {
            Some((v, src)) => {
                let t = v.trim().trim_end_matches('/').to_string();
                if !t.to_ascii_lowercase().starts_with("https://")
                    || crate::azure::proxy::split_url(&t).is_none()
                {
                    return Err(Error::invalid(
                        "aws_sts_endpoint",
                        v,
                        src,
                        "must be an https:// URL (the request carries the role's session token)",
                    ));
                }
                Some(Sourced::new(t, src))
            }
            None => None,
        };
        let token_file = self
            .flag("federated_token_file", &o.federated_token_file)
            .or_else(|| {
                self.env
                    .get("AZURE_FEDERATED_TOKEN_FILE")
                    .filter(|v| !v.trim().is_empty() && kind == TokenSourceKind::File)
                    .map(|v| {
                        (
                            v.clone(),
                            "environment AZURE_FEDERATED_TOKEN_FILE (Azure SDK convention)"
                                .to_string(),
                        )
                    })
            })
            .or_else(|| self.file("federated_token_file", &f.federated_token_file))
            .map(|(v, s)| Sourced::new(PathBuf::from(v.trim()), s));
        let github = match (
            self.env
                .get("ACTIONS_ID_TOKEN_REQUEST_URL")
                .filter(|v| !v.trim().is_empty()),
            self.env
                .get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
                .filter(|v| !v.trim().is_empty()),
        ) {
            (Some(u), Some(t)) => Some(GithubRequest {
                url: Sourced::new(
                    u.trim().to_string(),
                    "environment ACTIONS_ID_TOKEN_REQUEST_URL",
                ),
                token: RequestToken(t.trim().to_string()),
            }),
            _ => None,
        };
        if kind.is_federated() && tenant_id.is_none() {
            return Err(Error::invalid(
                "tenant_id",
                "",
                "nowhere",
                format!(
                    "--token-source {} exchanges the token at the tenant's Entra endpoint, so the tenant \
                     must be known before the first request: set --tenant-id, ARC_ENROLL_TENANT_ID or \
                     AZURE_TENANT_ID",
                    kind.name()
                ),
            ));
        }
        match kind {
            TokenSourceKind::File if token_file.is_none() => {
                return Err(Error::invalid(
                    "federated_token_file",
                    "",
                    "nowhere",
                    "--token-source file needs the token file: set --federated-token-file, \
                     ARC_ENROLL_FEDERATED_TOKEN_FILE or AZURE_FEDERATED_TOKEN_FILE",
                ))
            }
            TokenSourceKind::Github => {
                if let Some(g) = &github {
                    if crate::azure::proxy::split_url(&g.url.value).is_none()
                        || !g.url.value.to_ascii_lowercase().starts_with("https://")
                    {
                        return Err(Error::invalid(
                            "ACTIONS_ID_TOKEN_REQUEST_URL",
                            &g.url.value,
                            &g.url.source,
                            "must be an https:// URL (the job's request token is sent to it)",
                        ));
                    }
                }
            }
            _ => {}
        }
        if resource_name.value.contains("{instance_id}") && !kind.has_instance_id() {
            return Err(Error::invalid(
                "resource_name",
                &resource_name.value,
                &resource_name.source,
                format!(
                    "{{instance_id}} is known only with --token-source aws or gcp (this run uses {})",
                    kind.name()
                ),
            ));
        }
        Ok(Federation {
            authority_host,
            token_file,
            gcp_metadata_endpoint,
            aws_imds_endpoint,
            aws_sts_endpoint,
            github,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Opts, Sources};
    use crate::config::{resolve, Env, Identity, TokenSourceKind};

    const CID: &str = "ba2f5613-35f8-4aa6-a8af-e679a885a43c";
    const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn opts(source: Option<&str>) -> Opts {
        Opts {
            config: Some(String::new()),
            sysroot: Some("/nonexistent-sysroot".into()),
            token_source: source.map(String::from),
            ..Default::default()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err(o: &Opts, e: &Env) -> String {
        resolve(o, &Sources::default(), e).unwrap_err().to_string()
    }

    #[test]
    fn azure_sdk_variables_count_only_for_federated_sources() {
        let e = env(&[
            ("AZURE_CLIENT_ID", CID),
            ("AZURE_TENANT_ID", TID),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/"),
        ]);
        // imds: an AKS pod's AZURE_* must not change which identity IMDS is asked for.
        let s = resolve(&opts(None), &Sources::default(), &e).unwrap();
        assert_eq!(s.identity.value, Identity::SystemAssigned);
        assert!(s.tenant_id.is_none());
        assert_eq!(s.token_source.value, TokenSourceKind::Imds);
        let mut o = opts(Some("file"));
        o.federated_token_file = Some("/var/run/t".into());
        let s = resolve(&o, &Sources::default(), &e).unwrap();
        assert_eq!(s.identity.value, Identity::ClientId(CID.into()));
        assert!(s.identity.source.contains("AZURE_CLIENT_ID"));
        assert_eq!(s.tenant_id.as_ref().unwrap().value, TID);
        assert_eq!(
            s.federation.authority_host.value,
            "https://login.microsoftonline.us"
        );
        // The flag wins over the SDK variable.
        o.client_id = Some("11111111-1111-4111-8111-111111111111".into());
        let s = resolve(&o, &Sources::default(), &e).unwrap();
        assert_eq!(
            s.identity.value,
            Identity::ClientId("11111111-1111-4111-8111-111111111111".into())
        );
    }

    #[test]
    fn federated_sources_need_client_tenant_and_their_inputs() {
        let e = env(&[("AZURE_TENANT_ID", TID)]);
        assert!(err(&opts(Some("gcp")), &e).contains("invalid setting client_id"));
        let mut o = opts(Some("gcp"));
        o.client_id = Some(CID.into());
        assert!(err(&o, &Env::new()).contains("invalid setting tenant_id"));
        let s = resolve(&o, &Sources::default(), &e).unwrap();
        assert_eq!(
            s.federation.authority_host.value,
            "https://login.microsoftonline.com"
        );
        assert_eq!(
            s.federation.gcp_metadata_endpoint.value,
            "http://metadata.google.internal"
        );
        let mut f = o.clone();
        f.token_source = Some("file".into());
        assert!(err(&f, &e).contains("invalid setting federated_token_file"));
        let s = resolve(
            &f,
            &Sources::default(),
            &env(&[
                ("AZURE_TENANT_ID", TID),
                ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.federation.token_file.unwrap().value,
            std::path::PathBuf::from("/t")
        );
        let mut a = o.clone();
        a.authority_host = Some("http://login.microsoftonline.com".into());
        assert!(err(&a, &e).contains("must be an https:// URL"));
        a.authority_host = None;
        a.aws_sts_endpoint = Some("http://127.0.0.1:1".into());
        assert!(err(&a, &e).contains("invalid setting aws_sts_endpoint"));
        let mut bad = o.clone();
        bad.token_source = Some("azure".into());
        assert!(err(&bad, &e).contains("must be imds, gcp, aws, file or github"));
        let mut rid = o.clone();
        rid.client_id = None;
        rid.object_id = Some(CID.into());
        assert!(err(&rid, &e).contains("not its resource or object id"));
        let mut tmpl = o.clone();
        tmpl.resource_name = Some("x-{instance_id}".into());
        assert!(
            resolve(&tmpl, &Sources::default(), &e).is_ok(),
            "gcp knows an instance id"
        );
        tmpl.token_source = Some("github".into());
        assert!(err(&tmpl, &e).contains("{instance_id} is known only"));
    }

    #[test]
    fn github_needs_the_job_variables_at_use_not_at_resolve() {
        let mut o = opts(Some("github"));
        o.client_id = Some(CID.into());
        let e = env(&[("AZURE_TENANT_ID", TID)]);
        let s = resolve(&o, &Sources::default(), &e).unwrap();
        assert!(super::require_github_job(s.token_source.value, &s.federation).is_err());
        let e = env(&[
            ("AZURE_TENANT_ID", TID),
            (
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                "https://x/idtoken?api-version=2.0",
            ),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ghs_secret_value"),
        ]);
        let s = resolve(&o, &Sources::default(), &e).unwrap();
        assert!(super::require_github_job(s.token_source.value, &s.federation).is_ok());
        assert!(
            !format!("{s:?}").contains("ghs_secret_value"),
            "the request token is not in Debug"
        );
    }
}
