//! The enrollment path settings (issue 14, FACTS §10): `--precreate`, `--private-relay` (implies
//! it), `--nexus-vm-id` (a Microsoft.NetworkCloud/virtualMachines id, only with Private Relay),
//! `--key-on-command-line`; and what `connect existing` cannot take.

use super::resolve::{validated, Resolver};
use super::validate::validate_resource_id;
use super::{EnrollPathKind, Sourced};
use crate::error::Error;

type EnrollSettings = (
    Sourced<EnrollPathKind>,
    Option<Sourced<String>>,
    Sourced<bool>,
);

impl Resolver<'_> {
    pub(super) fn enroll_path_settings(
        &self,
        private_link_scope: &Option<Sourced<String>>,
        gateway_id: &Option<Sourced<String>>,
    ) -> Result<EnrollSettings, Error> {
        let (o, f) = (self.opts, &self.file);
        let enroll_path = self.enroll_path()?;
        let nexus_vm_id = self
            .flag("nexus_vm_id", &o.nexus_vm_id)
            .or_else(|| self.file("nexus_vm_id", &f.nexus_vm_id))
            .map(|c| {
                validated(c, "nexus_vm_id", |v| {
                    validate_resource_id(v, "Microsoft.NetworkCloud/virtualMachines")
                })
            })
            .transpose()?;
        if let Some(id) = nexus_vm_id.as_ref() {
            if enroll_path.value != EnrollPathKind::PrivateRelay {
                return Err(Error::invalid(
                    "nexus_vm_id",
                    &id.value,
                    &id.source,
                    "is only used with --private-relay (the Nexus VM whose traffic goes to Private Relay); add --private-relay or drop it",
                ));
            }
        }
        let key_on_command_line = self.bool_setting(
            "key_on_command_line",
            &o.key_on_command_line,
            f.key_on_command_line,
        )?;
        if enroll_path.value.precreates() {
            // `connect existing` takes no such flags (FACTS §10 step 6): refuse rather than drop them.
            for (id, v) in [
                ("private_link_scope", private_link_scope),
                ("gateway_id", gateway_id),
            ] {
                if let Some(v) = v {
                    return Err(Error::Usage(format!(
                        "{id} ({}, from {}) cannot be used with a pre-created machine ({} from {}): `azcmagent connect existing` has no such option",
                        v.value, v.source, enroll_path.value.label(), enroll_path.source
                    )));
                }
            }
        }

        Ok((enroll_path, nexus_vm_id, key_on_command_line))
    }

    /// `--private-relay` (implies `--precreate`), `--precreate`, else the agent connects with
    /// the token. `--precreate false` with `--private-relay` is a contradiction.
    fn enroll_path(&self) -> Result<Sourced<EnrollPathKind>, Error> {
        let (o, f) = (self.opts, &self.file);
        let precreate = self.bool_setting("precreate", &o.precreate, f.precreate)?;
        let relay = self.bool_setting("private_relay", &o.private_relay, f.private_relay)?;
        if relay.value && !precreate.value && precreate.source != "default" {
            return Err(Error::Usage(format!(
                "private_relay (from {}) pre-creates the machine, but precreate is false (from {})",
                relay.source, precreate.source
            )));
        }
        Ok(if relay.value {
            Sourced::new(EnrollPathKind::PrivateRelay, relay.source)
        } else if precreate.value {
            Sourced::new(EnrollPathKind::Precreate, precreate.source)
        } else {
            Sourced::new(EnrollPathKind::AgentToken, "default")
        })
    }
}
