#!/bin/sh
# Golden image recipe: run as root inside the template VM right before you capture its disk, so
# every VM made from the image enrolls into Azure Arc as itself (its own name, its own resource).
# Offline, on a mounted image: arc-enroll generalize --sysroot /mnt/image (and the steps below
# with /mnt/image prefixed).
set -e
# 1. Disconnect the agent locally if connected (the template's Azure resource is left alone: delete
#    it yourself if you no longer want it) and remove arc-enroll's state.
arc-enroll generalize
# 2. Let cloud-init treat the next boot as a new instance (runcmd and write_files run again).
cloud-init clean --logs
# 3. Empty the machine-id: systemd makes a new one on each clone's first boot. A copied disk keeps
#    it otherwise (neither systemd nor cloud-init renews it).
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id
# 4. Keep /etc/arc-enroll/config.json, and use a resource-name template with {vm_uuid8} (or
#    {machine_id8}) in it, so clones that share a host name do not collide in Azure. Put the
#    agent's lockdown there too (examples/config-lockdown.json: monitor mode, an allowlist of
#    monitoring extensions), so every clone is locked down before its first heartbeat.
echo "generalized: power off now and capture the disk"
