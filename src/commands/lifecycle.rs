//! `status`, `disconnect` and `generalize`: what this machine is, removing the enrollment, and
//! preparing a golden image so that every clone enrolls as itself (FACTS §3).

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::agent::{self, Agent, Show, TokenMode};
use crate::config::Settings;
use crate::error::Error;
use crate::output::print_result;
use crate::retry::Deadline;
use crate::state::{self, CloneVerdict, Loaded};

/// The agent's machine-specific local files (FACTS §3, §4.1): identity, certificates, the HIMDS
/// token challenge files and the agent config that holds the resource. Removing them under
/// `--sysroot` makes an offline image forget its enrollment; the package itself stays.
pub const AGENT_IDENTITY_FILES: &[&str] = &[
    "var/opt/azcmagent/agentconfig.json",
    "var/opt/azcmagent/certs",
    "var/opt/azcmagent/tokens",
    "var/opt/azcmagent/localconfig.json",
];

fn find_agent(settings: &Settings) -> Option<Agent> {
    agent::locate(settings.azcmagent.as_ref().map(|s| s.value.as_str()))
        .filter(|p| agent::is_executable(p))
        .map(|p| Agent::new(p, &settings.proxy, &settings.arm_endpoint.value))
}

/// `status`: state file, agent status, clone verdict. Changes nothing, needs no token.
pub fn status(settings: &Settings, deadline: &Deadline) -> Result<u8, Error> {
    let (facts, fp) = state::machine_facts(&settings.sysroot.value);
    let loaded = state::load(&settings.state_dir.value);
    let agent = find_agent(settings);
    let show: Option<Result<Show, String>> = agent.as_ref().map(|a| match a.show(deadline) {
        Ok(s) => Ok(s),
        Err(e @ Error::Interrupted { .. }) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    });
    let show_ok = show.as_ref().and_then(|r| r.as_ref().ok());
    let agent_vm_uuid = show_ok
        .map(|s| s.vm_uuid.as_str())
        .filter(|s| !s.is_empty());
    let (state_json, state_text, verdict) = match &loaded {
        Loaded::Absent => (
            json!(null),
            "no state file (not enrolled by arc-enroll)".to_string(),
            json!({"verdict": "not-enrolled"}),
        ),
        Loaded::Corrupt { path, reason } => (
            json!({"corrupt": true, "path": path, "reason": reason}),
            format!("state file {} is unusable: {reason}", path.display()),
            json!({"verdict": "unknown", "why": "the state file is unusable"}),
        ),
        Loaded::Present(st) => {
            let v = match state::clone_verdict(st, &fp, agent_vm_uuid) {
                CloneVerdict::Same => {
                    json!({"verdict": "same-machine", "why": "product_uuid, machine-id and the agent's VM UUID match the enrollment"})
                }
                CloneVerdict::Clone { evidence } => {
                    json!({"verdict": "clone", "evidence": evidence})
                }
            };
            (
                serde_json::to_value(st).unwrap_or(json!(null)),
                format!(
                    "enrolled as {} at {} (agent {})",
                    st.resource_id,
                    st.enrolled_at,
                    st.agent_version.as_deref().unwrap_or("?")
                ),
                v,
            )
        }
    };
    let agent_json = match (&agent, &show) {
        (None, _) => json!({"present": false}),
        (Some(a), Some(Ok(s))) => json!({
            "present": true,
            "path": a.path,
            "status": s.status,
            "resource_id": s.resource_id,
            "resource_name": s.resource_name,
            "last_heartbeat": s.last_heartbeat,
            "vm_uuid": s.vm_uuid,
            "agent_version": s.agent_version,
        }),
        (Some(a), Some(Err(e))) => json!({"present": true, "path": a.path, "error": e}),
        (Some(a), None) => json!({"present": true, "path": a.path}),
    };
    let obj = json!({
        "machine": {
            "hostname": facts.hostname,
            "product_uuid": fp.product_uuid,
            "machine_id": fp.machine_id,
        },
        "state": state_json,
        "agent": agent_json,
        "clone": verdict,
        "agent_settings": crate::agent::settings::status_json(agent.as_ref(), settings, deadline),
    });
    if crate::output::json() {
        print_result("", obj);
        return Ok(0);
    }
    let mut t = String::new();
    t.push_str(&format!(
        "machine:  hostname {}, product_uuid {}, machine-id {}\n",
        facts.hostname.as_deref().unwrap_or("-"),
        fp.product_uuid.as_deref().unwrap_or("-"),
        fp.machine_id.as_deref().unwrap_or("-")
    ));
    t.push_str(&format!("state:    {state_text}\n"));
    match (&agent, &show) {
        (None, _) => t.push_str("agent:    not installed\n"),
        (Some(_), Some(Ok(s))) => t.push_str(&format!(
            "agent:    {}{}\n",
            s.summary(),
            if s.last_heartbeat.is_empty() {
                String::new()
            } else {
                format!(", last heartbeat {}", s.last_heartbeat)
            }
        )),
        (Some(_), Some(Err(e))) => t.push_str(&format!("agent:    cannot read its status: {e}\n")),
        (Some(_), None) => {}
    }
    let vtext = match verdict["verdict"].as_str() {
        Some("clone") => format!(
            "CLONE of an enrolled machine: {}",
            verdict["evidence"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join("; "))
                .unwrap_or_default()
        ),
        Some("same-machine") => "same machine as at enrollment".into(),
        Some("not-enrolled") => "not enrolled".into(),
        _ => "unknown".into(),
    };
    t.push_str(&format!("clone:    {vtext}\n"));
    crate::agent::settings::status_text(&obj["agent_settings"], &mut t);
    // The agent's words and Azure's values: no escape sequence or line separator reaches a terminal.
    let t: String = t
        .lines()
        .map(|l| format!("{}\n", crate::text::escape_remote(l)))
        .collect();
    crate::output::stdout(&t);
    Ok(0)
}

/// `disconnect`: the agent first (with a fresh token it deletes the Azure resource; with
/// `--local-only` it keeps it), then our state, only after the agent succeeded.
pub fn disconnect(settings: &Settings, deadline: &Deadline, local_only: bool) -> Result<u8, Error> {
    let _lock = state::lock(&settings.state_dir.value, deadline)?;
    let agent = find_agent(settings).ok_or_else(|| Error::Agent {
        detail: "azcmagent is not installed, so there is nothing to disconnect".into(),
        advice: "pass --azcmagent PATH if it is installed elsewhere".into(),
    })?;
    let show = agent.show(deadline).ok();
    let resource = show
        .as_ref()
        .map(|s| s.resource_id.clone())
        .filter(|s| !s.is_empty());
    let out = if local_only {
        log::info!(
            "disconnecting locally (--force-local-only); the Azure resource {} is kept",
            resource.as_deref().unwrap_or("(none)")
        );
        agent.disconnect(None, deadline)?
    } else {
        log::info!(
            "disconnecting with a fresh managed-identity token; the Azure resource {} will be deleted",
            resource.as_deref().unwrap_or("(none known)")
        );
        let http = crate::azure::http::Http::new(settings.proxy.clone());
        let (token, _claims) = crate::identity::source(settings).fresh_token(&http, deadline)?;
        let mode = TokenMode::from_settings(settings);
        agent.disconnect(Some((&token, mode)), deadline)?
    };
    if out.code != Some(0) {
        return Err(Error::Agent {
            detail: format!(
                "azcmagent disconnect failed with {}: {}",
                out.describe(),
                out.tail_text()
            ),
            advice: if local_only {
                "check the agent's services and logs (/var/opt/azcmagent/log/azcmagent.log)".into()
            } else {
                "the identity may lack the right to delete the machine (Azure Connected Machine Resource Administrator); \
                 use --local-only to reset this machine and delete the resource in Azure by hand"
                    .into()
            },
        });
    }
    let had = state::clear(&settings.state_dir.value)?;
    let what = if local_only {
        "disconnected locally; the Azure resource was kept"
    } else {
        "disconnected; the Azure resource was deleted"
    };
    log::info!("{what}{}", if had { "; state cleared" } else { "" });
    print_result(
        what,
        json!({"result": what, "resource_id": resource, "local_only": local_only}),
    );
    Ok(0)
}

/// `generalize`: before capturing a golden image. Online (sysroot `/`): local-only disconnect if
/// the agent holds a resource, then remove our state. Offline (`--sysroot DIR`, a mounted
/// image): run nothing inside it; remove the agent's identity files and our state under DIR.
pub fn generalize(settings: &Settings, deadline: &Deadline) -> Result<u8, Error> {
    let sysroot = &settings.sysroot.value;
    let offline = sysroot != Path::new("/");
    let mut removed: Vec<String> = Vec::new();
    if offline {
        log::info!(
            "generalizing the image mounted at {} (nothing inside it is run)",
            sysroot.display()
        );
        // Every path is resolved inside the image without following a link on the way (an
        // image's `var/opt/azcmagent` or `etc` pointing at `/` would make us delete or empty this
        // machine's files); a link as the last component is removed itself, never followed.
        // All paths first: a refused one stops the run before anything is removed.
        let agent_files = AGENT_IDENTITY_FILES
            .iter()
            .map(|rel| in_image(sysroot, Path::new(rel)))
            .collect::<Result<Vec<_>, _>>()?;
        let state_rel = rel_under(sysroot, &settings.state_dir.value);
        // The state dir is a directory we list: it may not be a link either.
        let state_dir = in_image(sysroot, &state_rel.join(state::STATE_FILE))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mid = in_image(sysroot, Path::new("etc/machine-id"))?;
        for p in agent_files {
            if remove_path(&p)? {
                removed.push(p.display().to_string());
            }
        }
        for p in state_files(&state_dir) {
            if remove_path(&p)? {
                removed.push(p.display().to_string());
            }
        }
        match std::fs::symlink_metadata(&mid) {
            Ok(m) if m.is_file() && m.len() > 0 => {
                // An empty machine-id makes systemd create a new one on the clone's first boot
                // (VM-NOTES: neither systemd nor cloud-init renews a copied one).
                crate::fsafe::truncate_regular(&mid)
                    .map_err(|e| Error::io("cannot empty", &mid, e))?;
                removed.push(format!("{} (emptied)", mid.display()));
            }
            Ok(m) if !m.is_file() => log::warn!(
                "{} is {}, not a regular file: left alone (it is not followed out of the image); \
                 make it an empty regular file in the image so clones get their own machine-id",
                mid.display(),
                crate::fsafe::kind(&m)
            ),
            _ => {}
        }
    } else {
        let _lock = state::lock(&settings.state_dir.value, deadline)?;
        if let Some(agent) = find_agent(settings) {
            let show = agent.show(deadline).ok();
            if show.as_ref().map(|s| s.has_resource()).unwrap_or(false) {
                log::info!(
                    "the agent holds {}; disconnecting locally (--force-local-only) so clones do not share it",
                    show.as_ref().map(|s| s.resource_id.as_str()).unwrap_or("?")
                );
                let out = agent.disconnect(None, deadline)?;
                if out.code != Some(0) {
                    return Err(Error::Agent {
                        detail: format!("`azcmagent disconnect --force-local-only` failed: {}: {}", out.describe(), out.tail_text()),
                        advice: "run it by hand, then `arc-enroll generalize` again before capturing the image".into(),
                    });
                }
                removed.push(
                    "the agent's local connection (azcmagent disconnect --force-local-only)".into(),
                );
            } else {
                log::info!("the agent holds no resource; nothing to disconnect");
            }
        } else {
            log::info!("azcmagent is not installed; nothing to disconnect");
        }
        for p in state_files(&settings.state_dir.value) {
            if remove_path(&p)? {
                removed.push(p.display().to_string());
            }
        }
    }
    for r in &removed {
        log::info!("removed {r}");
    }
    let what = if removed.is_empty() {
        "already generalized: nothing to remove".to_string()
    } else {
        format!(
            "generalized: removed {} item(s); binary, unit and config left in place",
            removed.len()
        )
    };
    print_result(
        &what,
        json!({"result": what, "removed": removed, "offline": offline}),
    );
    Ok(0)
}

fn state_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![dir.join(state::STATE_FILE)];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(".state.json.tmp")
            {
                v.push(e.path());
            }
        }
    }
    v
}

/// `dir` as seen inside `sysroot` (an absolute state dir is re-rooted).
#[cfg(test)]
fn under(sysroot: &Path, dir: &Path) -> PathBuf {
    sysroot.join(rel_under(sysroot, dir))
}

/// `dir` relative to `sysroot`: a path already below the sysroot is made relative to it, any other
/// absolute path is taken as the image's own.
fn rel_under(sysroot: &Path, dir: &Path) -> PathBuf {
    match dir.strip_prefix(sysroot) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => dir.strip_prefix("/").unwrap_or(dir).to_path_buf(),
    }
}

/// `sysroot/rel` with no symbolic link followed on the way (`fsafe::inside`).
fn in_image(sysroot: &Path, rel: &Path) -> Result<PathBuf, Error> {
    crate::fsafe::inside(sysroot, rel).map_err(|e| Error::Io {
        what: "refusing to generalize: a path inside the image leads outside it:".into(),
        path: sysroot.join(rel),
        error: e,
    })
}

fn remove_path(p: &Path) -> Result<bool, Error> {
    let res = match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
    };
    res.map(|_| true)
        .map_err(|e| Error::io("cannot remove", p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_is_rerooted_under_sysroot() {
        assert_eq!(
            under(Path::new("/mnt/img"), Path::new("/var/lib/arc-enroll")),
            PathBuf::from("/mnt/img/var/lib/arc-enroll")
        );
        assert_eq!(
            under(Path::new("/mnt/img"), Path::new("/mnt/img/x")),
            PathBuf::from("/mnt/img/x")
        );
    }
}
