//! The fake "Azure" side shared by the fake agent (`fake-azcmagent`) and the fake ARM: a directory
//! (`FAKE_AZURE_DIR`) holding Arc machine resources and a little authorization state.
//!
//! Layout under the root:
//! - `machines/<subscription lower>/<resourceGroup lower>/<name lower>.json` — one ARM-shaped
//!   `Microsoft.HybridCompute/machines` resource each:
//!   `{"id", "name", "type", "location", "tags", "properties": {"vmUuid", "vmId", "status":
//!   "Connected", "agentVersion", "provisioningState", ...}, "tenantId"}`. ARM names are
//!   case-insensitive, hence the lower-cased path; `id`/`name` keep the caller's spelling.
//! - `authz.json` — `{"deny_connect_attempts": N, "unregistered_providers": ["Microsoft.HybridCompute"]}`:
//!   the next N machine writes are refused with ARM's 403 AuthorizationFailed (role assignment still
//!   propagating; decremented on each refusal), and writes under an unregistered namespace are refused
//!   with 409 MissingSubscriptionRegistration. Both optional; unknown keys are kept.
//! - `.lock` — every read-modify-write holds an exclusive `flock` on it (std `File::lock`), so
//!   concurrent fake agents / ARM threads see consistent state. Files are replaced atomically
//!   (write temp + rename), so plain readers never see half a file.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const MACHINE_TYPE: &str = "Microsoft.HybridCompute/machines";
pub const NAMESPACE: &str = "Microsoft.HybridCompute";
pub const AUTHZ_FILE: &str = "authz.json";

/// An Arc machine resource as ARM returns it (the subset the fakes care about; anything else a
/// fake puts into `extra`/`properties.extra` is kept verbatim).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub id: String,
    pub name: String,
    #[serde(rename = "type", default = "machine_type")]
    pub kind: String,
    pub location: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub properties: MachineProperties,
    #[serde(default)]
    pub tenant_id: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineProperties {
    /// The machine's SMBIOS UUID as the agent reported it (lower case): what tells two machines apart.
    #[serde(default)]
    pub vm_uuid: String,
    /// Azure-assigned id of the resource (kept across updates of the same machine).
    #[serde(default)]
    pub vm_id: String,
    /// `Connected` etc.; empty for a pre-created machine no agent has connected yet, which ARM
    /// shows as `"status": null` (FACTS §10; stored and served as null).
    #[serde(
        default = "connected",
        deserialize_with = "null_as_empty",
        serialize_with = "empty_as_null"
    )]
    pub status: String,
    #[serde(default)]
    pub agent_version: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn empty_as_null<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        s.serialize_str(v)
    }
}

fn machine_type() -> String {
    MACHINE_TYPE.to_string()
}
fn connected() -> String {
    "Connected".to_string()
}

impl Machine {
    /// A new `Connected` machine resource with its ARM id built from the parts.
    pub fn new(
        subscription: &str,
        resource_group: &str,
        name: &str,
        location: &str,
        vm_uuid: &str,
    ) -> Machine {
        let mut props = Map::new();
        props.insert("provisioningState".into(), "Succeeded".into());
        props.insert("osType".into(), "linux".into());
        Machine {
            id: machine_id(subscription, resource_group, name),
            name: name.to_string(),
            kind: machine_type(),
            location: location.to_string(),
            tags: BTreeMap::new(),
            properties: MachineProperties {
                vm_uuid: vm_uuid.to_lowercase(),
                vm_id: String::new(),
                status: connected(),
                agent_version: String::new(),
                extra: props,
            },
            tenant_id: String::new(),
            extra: Map::new(),
        }
    }

    /// (subscription, resourceGroup, name) from `id`.
    pub fn parts(&self) -> Option<(String, String, String)> {
        parse_machine_id(&self.id)
    }
}

/// `/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.HybridCompute/machines/<name>`
pub fn machine_id(subscription: &str, resource_group: &str, name: &str) -> String {
    format!("/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{MACHINE_TYPE}/{name}")
}

/// The inverse of [`machine_id`], case-insensitive on the fixed segments (ARM is).
pub fn parse_machine_id(id: &str) -> Option<(String, String, String)> {
    let seg: Vec<&str> = id.trim_matches('/').split('/').collect();
    if seg.len() != 8
        || !seg[0].eq_ignore_ascii_case("subscriptions")
        || !seg[2].eq_ignore_ascii_case("resourceGroups")
        || !seg[4].eq_ignore_ascii_case("providers")
        || !seg[5].eq_ignore_ascii_case(NAMESPACE)
        || !seg[6].eq_ignore_ascii_case("machines")
    {
        return None;
    }
    Some((seg[1].to_string(), seg[3].to_string(), seg[7].to_string()))
}

#[derive(Debug, PartialEq)]
pub enum PutOutcome {
    /// There was no machine of that name; this is what is stored now.
    Created(Machine),
    /// A machine of that name with the same vmUuid existed and was updated; what is stored now.
    Updated(Machine),
}

#[derive(Debug)]
pub enum PutError {
    /// A machine of that name exists with a different vmUuid (another machine's resource).
    Conflict {
        existing: Box<Machine>,
    },
    Io(io::Error),
}

impl From<io::Error> for PutError {
    fn from(e: io::Error) -> Self {
        PutError::Io(e)
    }
}

impl std::fmt::Display for PutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PutError::Conflict { existing } => write!(
                f,
                "resource {} already exists for another machine (vmUuid {})",
                existing.id, existing.properties.vm_uuid
            ),
            PutError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Contents of `authz.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Authz {
    #[serde(default)]
    pub deny_connect_attempts: u64,
    #[serde(default)]
    pub unregistered_providers: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why ARM refuses a machine write.
#[derive(Debug)]
pub enum Denied {
    /// 403 AuthorizationFailed (the role assignment has not propagated yet).
    Forbidden,
    /// 409 MissingSubscriptionRegistration for this namespace.
    ProviderNotRegistered(String),
    Io(io::Error),
}

impl From<io::Error> for Denied {
    fn from(e: io::Error) -> Self {
        Denied::Io(e)
    }
}

impl Denied {
    /// ARM error code (`error.code`) for the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Denied::Forbidden => "AuthorizationFailed",
            Denied::ProviderNotRegistered(_) => "MissingSubscriptionRegistration",
            Denied::Io(_) => "InternalServerError",
        }
    }
    pub fn http_status(&self) -> u16 {
        match self {
            Denied::Forbidden => 403,
            Denied::ProviderNotRegistered(_) => 409,
            Denied::Io(_) => 500,
        }
    }
}

/// ARM's 403 message (FACTS §1.5).
pub fn forbidden_message(appid: &str, oid: &str, action: &str, scope: &str) -> String {
    format!(
        "The client '{appid}' with object id '{oid}' does not have authorization to perform action \
         '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, \
         please refresh your credentials."
    )
}

/// ARM's MissingSubscriptionRegistration message (FACTS §1.5/§8).
pub fn unregistered_message(namespace: &str) -> String {
    format!(
        "The subscription isn't registered to use namespace '{namespace}'. See https://aka.ms/rps-not-found for how to register subscriptions."
    )
}

#[derive(Clone, Debug)]
pub struct Store {
    pub root: PathBuf,
}

/// Exclusive lock on `<root>/.lock`, released on drop (closing the file releases the flock).
pub struct Lock {
    _file: File,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// `FAKE_AZURE_DIR`, if set and non-empty.
    pub fn from_env() -> Option<Store> {
        std::env::var_os("FAKE_AZURE_DIR")
            .filter(|v| !v.is_empty())
            .map(Store::new)
    }

    /// Take the store-wide lock (blocks). Hold it across a read-modify-write.
    pub fn lock(&self) -> io::Result<Lock> {
        fs::create_dir_all(&self.root)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(".lock"))?;
        file.lock()?;
        Ok(Lock { _file: file })
    }

    pub fn machine_path(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
    ) -> io::Result<PathBuf> {
        for part in [subscription, resource_group, name] {
            if part.is_empty() || part == "." || part == ".." || part.contains(['/', '\\', '\0']) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid resource id segment {part:?}"),
                ));
            }
        }
        Ok(self
            .root
            .join("machines")
            .join(subscription.to_lowercase())
            .join(resource_group.to_lowercase())
            .join(format!("{}.json", name.to_lowercase())))
    }

    pub fn get_machine(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
    ) -> io::Result<Option<Machine>> {
        read_json(&self.machine_path(subscription, resource_group, name)?)
    }

    /// Create or update a machine the way `azcmagent connect` experiences it: no machine of that name
    /// → `Created` (Azure assigns `vmId` if the new one has none); same name and same vmUuid (case-insensitive) → `Updated` (a re-connect of the
    /// same machine; the stored `vmId` and any extra properties survive unless the new one sets
    /// them); same name, other vmUuid → `Conflict`. Does not consult `authz.json`
    /// (see [`Store::authorize_machine_write`]).
    pub fn put_machine(&self, machine: &Machine) -> Result<PutOutcome, PutError> {
        let (sub, rg, name) = parts_of(machine)?;
        let path = self.machine_path(&sub, &rg, &name)?;
        let _lock = self.lock()?;
        match read_json::<Machine>(&path)? {
            None => {
                let mut m = machine.clone();
                if m.properties.vm_id.is_empty() {
                    m.properties.vm_id = new_guid();
                }
                write_json(&path, &m)?;
                Ok(PutOutcome::Created(m))
            }
            Some(existing) => {
                if !existing
                    .properties
                    .vm_uuid
                    .eq_ignore_ascii_case(&machine.properties.vm_uuid)
                {
                    return Err(PutError::Conflict {
                        existing: Box::new(existing),
                    });
                }
                let merged = merge(existing, machine.clone());
                write_json(&path, &merged)?;
                Ok(PutOutcome::Updated(merged))
            }
        }
    }

    /// Unconditional create-or-replace (ARM PUT semantics); returns true when it created.
    pub fn upsert_machine(&self, machine: &Machine) -> io::Result<bool> {
        let (sub, rg, name) = parts_of(machine)?;
        let path = self.machine_path(&sub, &rg, &name)?;
        let _lock = self.lock()?;
        let created = !path.exists();
        write_json(&path, machine)?;
        Ok(created)
    }

    /// Change a stored machine under the lock (e.g. ARM PATCH, status). None if it does not exist.
    pub fn update_machine(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        change: impl FnOnce(&mut Machine),
    ) -> io::Result<Option<Machine>> {
        let path = self.machine_path(subscription, resource_group, name)?;
        let _lock = self.lock()?;
        let Some(mut m) = read_json::<Machine>(&path)? else {
            return Ok(None);
        };
        change(&mut m);
        write_json(&path, &m)?;
        Ok(Some(m))
    }

    /// Delete a machine; returns what was deleted (None: there was none).
    pub fn delete_machine(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
    ) -> io::Result<Option<Machine>> {
        let path = self.machine_path(subscription, resource_group, name)?;
        let _lock = self.lock()?;
        let existing = read_json::<Machine>(&path)?;
        if existing.is_some() {
            fs::remove_file(&path)?;
        }
        Ok(existing)
    }

    /// Every machine in the store, sorted by lower-cased id.
    pub fn list_machines(&self) -> io::Result<Vec<Machine>> {
        let mut out = Vec::new();
        let base = self.root.join("machines");
        for sub in read_dir_sorted(&base)? {
            for rg in read_dir_sorted(&sub)? {
                for file in read_dir_sorted(&rg)? {
                    if file.extension().is_some_and(|e| e == "json") {
                        if let Some(m) = read_json::<Machine>(&file)? {
                            out.push(m);
                        }
                    }
                }
            }
        }
        out.sort_by_key(|m| m.id.to_lowercase());
        Ok(out)
    }

    /// Current `authz.json` (default when absent).
    pub fn authz(&self) -> io::Result<Authz> {
        Ok(read_json(&self.root.join(AUTHZ_FILE))?.unwrap_or_default())
    }

    pub fn set_authz(&self, authz: &Authz) -> io::Result<()> {
        let _lock = self.lock()?;
        write_json(&self.root.join(AUTHZ_FILE), authz)
    }

    /// Whether `namespace` is registered (case-insensitive; everything is unless listed).
    pub fn is_registered(&self, namespace: &str) -> io::Result<bool> {
        Ok(!self
            .authz()?
            .unregistered_providers
            .iter()
            .any(|p| p.eq_ignore_ascii_case(namespace)))
    }

    /// `az provider register`: drop `namespace` from the unregistered list.
    pub fn register_provider(&self, namespace: &str) -> io::Result<()> {
        let _lock = self.lock()?;
        let path = self.root.join(AUTHZ_FILE);
        let mut a: Authz = read_json(&path)?.unwrap_or_default();
        let before = a.unregistered_providers.len();
        a.unregistered_providers
            .retain(|p| !p.eq_ignore_ascii_case(namespace));
        if a.unregistered_providers.len() != before {
            write_json(&path, &a)?;
        }
        Ok(())
    }

    /// If `deny_connect_attempts` > 0, decrement it and return true (this attempt is denied).
    pub fn take_connect_denial(&self) -> io::Result<bool> {
        let _lock = self.lock()?;
        let path = self.root.join(AUTHZ_FILE);
        let Some(mut a) = read_json::<Authz>(&path)? else {
            return Ok(false);
        };
        if a.deny_connect_attempts == 0 {
            return Ok(false);
        }
        a.deny_connect_attempts -= 1;
        write_json(&path, &a)?;
        Ok(true)
    }

    /// What ARM checks before a `machines/write`: first authorization (consumes one
    /// `deny_connect_attempts`), then registration of `Microsoft.HybridCompute`.
    pub fn authorize_machine_write(&self) -> Result<(), Denied> {
        if self.take_connect_denial()? {
            return Err(Denied::Forbidden);
        }
        if !self.is_registered(NAMESPACE)? {
            return Err(Denied::ProviderNotRegistered(NAMESPACE.to_string()));
        }
        Ok(())
    }
}

fn parts_of(m: &Machine) -> io::Result<(String, String, String)> {
    m.parts().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a machine resource id: {}", m.id),
        )
    })
}

fn merge(existing: Machine, mut new: Machine) -> Machine {
    if new.properties.vm_id.is_empty() {
        new.properties.vm_id = existing.properties.vm_id;
    }
    for (k, v) in existing.properties.extra {
        new.properties.extra.entry(k).or_insert(v);
    }
    for (k, v) in existing.extra {
        new.extra.entry(k).or_insert(v);
    }
    if new.tenant_id.is_empty() {
        new.tenant_id = existing.tenant_id;
    }
    new
}

fn read_dir_sorted(dir: &Path) -> io::Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            v.sort();
            Ok(v)
        }
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// Read a JSON file; None when it does not exist. A file that does not parse is an error.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write JSON atomically (temp file in the same directory + rename), creating parent directories.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        let mut f = File::create(&tmp)?;
        let mut text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
        text.push(b'\n');
        f.write_all(&text)?;
    }
    fs::rename(&tmp, path)
}

/// A random (v4) GUID from the kernel, or a time/pid-derived one if that is unavailable.
pub fn new_guid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| {
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let h = format!("{:032x}", n ^ ((std::process::id() as u128) << 64));
            format!(
                "{}-{}-4{}-8{}-{}",
                &h[0..8],
                &h[8..12],
                &h[13..16],
                &h[17..20],
                &h[20..32]
            )
        })
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (UTC).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "fake-store-{tag}-{}-{}",
            std::process::id(),
            crate::jwt::now_unix()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn ids_round_trip() {
        let id = machine_id("sub-1", "RG-A", "vm1");
        assert_eq!(
            id,
            "/subscriptions/sub-1/resourceGroups/RG-A/providers/Microsoft.HybridCompute/machines/vm1"
        );
        assert_eq!(
            parse_machine_id(&id.to_lowercase()),
            Some(("sub-1".into(), "rg-a".into(), "vm1".into()))
        );
        assert_eq!(parse_machine_id("/subscriptions/x/resourceGroups/y"), None);
    }

    #[test]
    fn put_get_conflict_update_delete_list() {
        let root = tmp("crud");
        let s = Store::new(&root);
        let mut a = Machine::new("sub", "RG", "VM1", "westeurope", "AAAA-1");
        a.properties.vm_id = "vmid-1".into();
        match s.put_machine(&a).unwrap() {
            PutOutcome::Created(m) => assert_eq!(m.properties.vm_uuid, "aaaa-1"),
            o => panic!("{o:?}"),
        }
        assert!(root.join("machines/sub/rg/vm1.json").is_file());
        // the stored JSON has the documented shape
        let v: Value =
            serde_json::from_slice(&fs::read(root.join("machines/sub/rg/vm1.json")).unwrap())
                .unwrap();
        assert_eq!(v["properties"]["status"], "Connected");
        assert_eq!(v["properties"]["vmUuid"], "aaaa-1");
        assert_eq!(v["type"], MACHINE_TYPE);
        assert!(v.get("tenantId").is_some());

        // same name (other case), other machine -> conflict
        let b = Machine::new("sub", "rg", "vm1", "westeurope", "bbbb-2");
        match s.put_machine(&b) {
            Err(PutError::Conflict { existing }) => assert_eq!(existing.name, "VM1"),
            o => panic!("{o:?}"),
        }
        // same machine again -> update, vmId kept
        let mut a2 = Machine::new("sub", "rg", "vm1", "northeurope", "aaaa-1");
        a2.tags.insert("k".into(), "v".into());
        match s.put_machine(&a2).unwrap() {
            PutOutcome::Updated(m) => {
                assert_eq!(m.properties.vm_id, "vmid-1");
                assert_eq!(m.location, "northeurope");
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(
            s.get_machine("SUB", "Rg", "Vm1").unwrap().unwrap().tags["k"],
            "v"
        );
        s.put_machine(&Machine::new("sub", "rg2", "vm2", "westus", "c"))
            .unwrap();
        let all = s.list_machines().unwrap();
        assert_eq!(all.len(), 2);
        assert!(s.delete_machine("sub", "RG", "vm1").unwrap().is_some());
        assert!(s.delete_machine("sub", "RG", "vm1").unwrap().is_none());
        assert_eq!(s.list_machines().unwrap().len(), 1);
        assert!(s.machine_path("sub", "..", "x").is_err());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn authz_counter_and_providers() {
        let root = tmp("authz");
        let s = Store::new(&root);
        assert!(s.authorize_machine_write().is_ok());
        s.set_authz(&Authz {
            deny_connect_attempts: 2,
            unregistered_providers: vec!["microsoft.hybridcompute".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(
            s.authorize_machine_write(),
            Err(Denied::Forbidden)
        ));
        assert!(matches!(
            s.authorize_machine_write(),
            Err(Denied::Forbidden)
        ));
        assert!(matches!(
            s.authorize_machine_write(),
            Err(Denied::ProviderNotRegistered(_))
        ));
        assert_eq!(s.authz().unwrap().deny_connect_attempts, 0);
        s.register_provider(NAMESPACE).unwrap();
        assert!(s.authorize_machine_write().is_ok());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn concurrent_denials_are_counted_exactly() {
        let root = tmp("conc");
        let s = Store::new(&root);
        s.set_authz(&Authz {
            deny_connect_attempts: 10,
            ..Default::default()
        })
        .unwrap();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..3).filter(|_| s.take_connect_denial().unwrap()).count()
                })
            })
            .collect();
        let denied: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(denied, 10);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
