//! Every federation fake in one process, for trying `--token-source` by hand (see `--help`).

use arc_enroll_fakes::aws::{AwsConfig, FakeAws};
use arc_enroll_fakes::entra::{EntraConfig, FakeEntra, Fic};
use arc_enroll_fakes::gcp::{FakeGcpMetadata, GcpConfig};
use arc_enroll_fakes::github::{FakeGithubOidc, GithubConfig};
use arc_enroll_fakes::https::TestCa;
use arc_enroll_fakes::imds::UserIdentity;
use std::path::PathBuf;

const HELP: &str = "\
fake-federation: a fake Entra token endpoint (HTTPS) trusting one user-assigned identity through
federated credentials for a fake GCP metadata server, a fake AWS IMDSv2 + STS (HTTPS, SigV4
verified with aws-sigv4), a Kubernetes-style token file and a fake GitHub Actions OIDC endpoint
(HTTPS). Loopback only.

USAGE: fake-federation --dir DIR [--propagating N]

Writes DIR/ca.pem, DIR/k8s-token and DIR/<source>.env (gcp, aws, file, github): the environment
for `arc-enroll --token-source <source>`, e.g.  set -a; . DIR/gcp.env; set +a; arc-enroll token
--propagating N: the first N matching exchanges answer AADSTS70021 (credential propagating).
Runs until killed.
";

fn fail(msg: &str) -> ! {
    eprintln!("fake-federation: {msg}\n(see fake-federation --help)");
    std::process::exit(2)
}

fn main() {
    let mut dir: Option<PathBuf> = None;
    let mut propagating = 0u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return;
            }
            "--dir" => {
                dir = Some(PathBuf::from(
                    args.next().unwrap_or_else(|| fail("--dir needs a value")),
                ))
            }
            "--propagating" => {
                propagating = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| fail("--propagating needs a number"))
            }
            other => fail(&format!("unknown option {other}")),
        }
    }
    let dir = dir.unwrap_or_else(|| fail("--dir is required"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    let ca = TestCa::new(Some(&dir)).unwrap_or_else(|e| fail(&format!("test CA: {e}")));
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let uami = UserIdentity::named(
        "11111111-2222-3333-4444-555555555555",
        "identities",
        "arc-enroller",
    );
    let aud = "api://AzureADTokenExchange";
    let (gcp_cfg, aws_cfg, gh_cfg) = (
        GcpConfig::default(),
        AwsConfig::default(),
        GithubConfig::default(),
    );
    let k8s_iss = "https://kubernetes.default.svc.cluster.local";
    let fics = vec![
        Fic::new(
            arc_enroll_fakes::gcp::ISSUER,
            &gcp_cfg.service_account_id,
            aud,
        ),
        Fic::new(&aws_cfg.issuer(), &aws_cfg.role_arn(), aud),
        Fic::new(k8s_iss, "system:serviceaccount:arc:enroller", aud),
        Fic::new(arc_enroll_fakes::github::ISSUER, &gh_cfg.subject(), aud),
    ];
    let mut cfg = EntraConfig::with_identity(uami.clone(), tenant, fics);
    cfg.propagating_calls = propagating;
    cfg.log_stderr = true;
    let entra = FakeEntra::try_start(cfg, Some(ca.clone()))
        .unwrap_or_else(|e| fail(&format!("Entra: {e}")));
    let gcp = FakeGcpMetadata::start(gcp_cfg);
    let aws = FakeAws::start(
        AwsConfig {
            log_stderr: true,
            ..aws_cfg
        },
        Some(ca.clone()),
    );
    let gh = FakeGithubOidc::start(gh_cfg, Some(ca.clone()));
    let token_file = dir.join("k8s-token");
    std::fs::write(
        &token_file,
        arc_enroll_fakes::oidc::kubernetes_token(k8s_iss, "arc", "enroller", aud, 3600),
    )
    .unwrap_or_else(|e| fail(&format!("{}: {e}", token_file.display())));
    let common = format!(
        "ARC_ENROLL_CLIENT_ID={}\nARC_ENROLL_TENANT_ID={tenant}\nARC_ENROLL_AUTHORITY_HOST={}\nSSL_CERT_FILE={}\n",
        uami.client_id,
        entra.url(),
        ca.ca_pem().display()
    );
    let envs = [
        ("gcp", format!("ARC_ENROLL_TOKEN_SOURCE=gcp\nARC_ENROLL_GCP_METADATA_ENDPOINT={}\n", gcp.url())),
        ("aws", format!("ARC_ENROLL_TOKEN_SOURCE=aws\nARC_ENROLL_AWS_IMDS_ENDPOINT={}\nARC_ENROLL_AWS_STS_ENDPOINT={}\n", aws.imds_url(), aws.sts_url())),
        ("file", format!("ARC_ENROLL_TOKEN_SOURCE=file\nARC_ENROLL_FEDERATED_TOKEN_FILE={}\n", token_file.display())),
        ("github", format!("ARC_ENROLL_TOKEN_SOURCE=github\nACTIONS_ID_TOKEN_REQUEST_URL={}\nACTIONS_ID_TOKEN_REQUEST_TOKEN={}\n", gh.request_url(), gh.request_token())),
    ];
    for (name, text) in &envs {
        let p = dir.join(format!("{name}.env"));
        std::fs::write(&p, format!("{common}{text}"))
            .unwrap_or_else(|e| fail(&format!("{}: {e}", p.display())));
    }
    println!(
        "fake-federation: Entra at {}; environments in {}/{{gcp,aws,file,github}}.env",
        entra.url(),
        dir.display()
    );
    loop {
        std::thread::park();
    }
}
