//! Files we must not be tricked through (issue 12 items 6, 7, 13).
//!
//! - Paths inside a mounted image (`--sysroot DIR`): no symbolic link below DIR is followed, so an
//!   image whose `etc` or `var/opt/azcmagent` is a link to `/etc` cannot make us read or write the
//!   host. A link as the last component is not opened either (`O_NOFOLLOW`); removing it removes the
//!   link itself.
//! - Reads are bounded and never block: `O_NONBLOCK` then `fstat`, regular files only, at most a
//!   given size. A FIFO given as `--config` is refused instead of waiting for a writer forever.
//! - Trust, sshd `StrictModes` style: the config file, the state directory and the agent executable,
//!   and every directory above them up to `/`, are owned by root or by us and are not writable by
//!   group or others. A world-writable directory is accepted on the way only when it is sticky
//!   (`/tmp`) and the next component is ours (or root's), as OpenSSH's `safe_path` accepts.
//!
//! Three `open(2)` flags and `geteuid(2)` are declared by hand (like `signals.rs`), not taken from a
//! crate: their values are the Linux generic ones, the same on x86_64 and aarch64 (the two targets
//! we ship) and on x86 and riscv64; arm, powerpc, mips, sparc and alpha use other numbers.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "x86",
    target_arch = "riscv64"
)))]
compile_error!(
    "fsafe.rs: check O_NOFOLLOW/O_NONBLOCK for this architecture (asm-generic values assumed)"
);

/// Do not follow a symbolic link at the last component (ELOOP instead).
pub const O_NOFOLLOW: i32 = 0o400_000;
/// Do not wait for a FIFO's writer (or a device) when opening.
pub const O_NONBLOCK: i32 = 0o4_000;

extern "C" {
    fn geteuid() -> u32;
}

/// Our effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { geteuid() }
}

/// What kind of file this is, in words.
pub fn kind(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

fn err(kind: io::ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

/// Read a regular file, at most `max` bytes (a larger file is an error), without blocking on a
/// FIFO or device. With `follow == false` a symbolic link as the last component is refused.
pub fn read_regular(path: &Path, max: u64, follow: bool) -> io::Result<Vec<u8>> {
    let flags = O_NONBLOCK | if follow { 0 } else { O_NOFOLLOW };
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| {
            // ELOOP (40) on the last component under O_NOFOLLOW: say it in words.
            if !follow && e.raw_os_error() == Some(40) {
                err(
                    io::ErrorKind::InvalidInput,
                    "it is a symbolic link, which is not followed here".into(),
                )
            } else {
                e
            }
        })?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(err(
            io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", kind(&m)),
        ));
    }
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(err(
            io::ErrorKind::InvalidData,
            format!("it is larger than {max} bytes"),
        ));
    }
    Ok(buf)
}

/// `root/rel`, checking that no component strictly between `root` and the last component is a
/// symbolic link (nor `..`), so the path cannot lead out of `root`. The last component is the
/// caller's to open with `O_NOFOLLOW` or inspect with `symlink_metadata`. With `root == /` nothing
/// is outside it and the path is returned as is.
pub fn inside(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let comps: Vec<Component> = rel
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    if comps.iter().any(|c| matches!(c, Component::ParentDir)) {
        return Err(err(
            io::ErrorKind::InvalidInput,
            format!("{} holds '..'", rel.display()),
        ));
    }
    let mut p = root.to_path_buf();
    if root == Path::new("/") {
        p.extend(comps);
        return Ok(p);
    }
    let n = comps.len();
    for (i, c) in comps.into_iter().enumerate() {
        p.push(c);
        if i + 1 == n {
            break;
        }
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(err(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is a symbolic link; links inside the image are not followed (they could point at this machine's own files)",
                        p.display()
                    ),
                ))
            }
            Ok(_) => {}
            // Nothing further exists: the rest cannot be a link either.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(p)
}

/// Read `root/rel` as text (see `inside`; a link as the last component is followed only when
/// `root` is `/`), at most `max` bytes; not UTF-8 is an error, never a panic.
pub fn read_inside(root: &Path, rel: &Path, max: u64) -> io::Result<String> {
    let p = inside(root, rel)?;
    let bytes = read_regular(&p, max, root == Path::new("/"))?;
    String::from_utf8(bytes)
        .map_err(|_| err(io::ErrorKind::InvalidData, "it is not UTF-8 text".into()))
}

/// Open an existing regular file for writing, truncated, never through a symbolic link.
pub fn truncate_regular(path: &Path) -> io::Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(O_NOFOLLOW | O_NONBLOCK)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(err(
            io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", kind(&m)),
        ));
    }
    f.set_len(0)?;
    f.sync_all()
}

/// Can a non-root user other than us change what `path` is (sshd `StrictModes`)? `Err(why)` when
/// `path` (resolved) or a directory above it is owned by another non-root user, or writable by
/// group or others (a sticky world-writable directory such as `/tmp` is fine when the next
/// component is ours or root's). A `path` that does not exist yet is judged by its nearest
/// existing ancestor, which is what the new file or directory would be created in.
pub fn untrusted(path: &Path) -> Result<(), String> {
    let uid = euid();
    let mut p = path;
    let real = loop {
        match fs::canonicalize(p) {
            Ok(r) => break r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match p.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                _ => return Ok(()),
            },
            Err(e) => return Err(format!("cannot resolve {}: {e}", p.display())),
        }
    };
    let ours = |u: u32| u == 0 || u == uid;
    let mut child_uid: Option<u32> = None;
    for dir in real.ancestors() {
        let m = fs::metadata(dir).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
        if !ours(m.uid()) {
            return Err(format!(
                "{} is owned by uid {}, neither root nor us (uid {uid}), who could change it",
                dir.display(),
                m.uid()
            ));
        }
        let mode = m.mode();
        if mode & 0o022 != 0 {
            let sticky_ok = m.is_dir()
                && mode & 0o1000 != 0
                && mode & 0o002 != 0
                && child_uid.is_some_and(ours);
            if !sticky_ok {
                return Err(format!(
                    "{} is writable by {} (mode {:04o}), so another user could replace what is in it",
                    dir.display(),
                    match (mode & 0o020 != 0, mode & 0o002 != 0) {
                        (true, true) => "group and others",
                        (true, false) => "its group",
                        _ => "others",
                    },
                    mode & 0o7777
                ));
            }
        }
        child_uid = Some(m.uid());
    }
    Ok(())
}

/// Open `path` for reading and writing, created with `mode` if missing, never through a symbolic
/// link at the last component.
pub fn open_rw_nofollow(path: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            let p = std::env::temp_dir().join(format!(
                "arc-enroll-fsafe-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            Tmp(p)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    fn chown(p: &Path, uid: u32) {
        std::os::unix::fs::chown(p, Some(uid), None).unwrap();
    }

    #[test]
    fn inside_refuses_a_link_on_the_way_but_not_root_slash() {
        let t = Tmp::new("inside");
        let host = t.0.join("host");
        let root = t.0.join("img");
        fs::create_dir_all(host.join("opt")).unwrap();
        fs::create_dir_all(root.join("var")).unwrap();
        symlink(&host, root.join("var/opt")).unwrap();
        let e = inside(&root, Path::new("var/opt/azcmagent/certs")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A relative link out of the image is refused the same way.
        fs::remove_file(root.join("var/opt")).unwrap();
        symlink("../../host", root.join("var/opt")).unwrap();
        assert!(inside(&root, Path::new("var/opt/x")).is_err());
        // The last component is not judged here (the caller does not follow it).
        assert_eq!(
            inside(&root, Path::new("var/opt")).unwrap(),
            root.join("var/opt")
        );
        assert!(inside(&root, Path::new("a/../b")).is_err());
        assert_eq!(
            inside(Path::new("/"), Path::new("/etc/machine-id")).unwrap(),
            PathBuf::from("/etc/machine-id")
        );
    }

    #[test]
    fn reads_are_regular_bounded_and_do_not_follow_the_last_link_in_an_image() {
        let t = Tmp::new("read");
        let root = t.0.join("img");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(t.0.join("secret"), "host").unwrap();
        symlink(t.0.join("secret"), root.join("etc/hostname")).unwrap();
        assert!(read_inside(&root, Path::new("etc/hostname"), 100).is_err());
        fs::write(root.join("etc/machine-id"), [0xff, 0xfe, b'\n']).unwrap();
        let e = read_inside(&root, Path::new("etc/machine-id"), 100).unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
        fs::write(root.join("etc/big"), vec![b'a'; 101]).unwrap();
        assert!(read_inside(&root, Path::new("etc/big"), 100).is_err());
        assert_eq!(
            read_inside(&root, Path::new("etc/big"), 101).unwrap().len(),
            101
        );
        assert!(
            read_regular(&root.join("etc"), 100, true).is_err(),
            "a directory"
        );
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let t = Tmp::new("fifo");
        let f = t.0.join("fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg(&f)
            .status()
            .unwrap();
        assert!(ok.success());
        let started = std::time::Instant::now();
        let e = read_regular(&f, 100, true).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn strict_modes_refuse_group_world_writable_or_foreign_owned_paths() {
        let t = Tmp::new("strict");
        let d = t.0.join("d");
        fs::create_dir_all(&d).unwrap();
        let f = d.join("config.json");
        fs::write(&f, "{}").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        untrusted(&f).unwrap();
        // Not yet existing: judged by the nearest existing ancestor.
        untrusted(&d.join("new/state")).unwrap();
        for (mode, what) in [
            (0o775, "its group"),
            (0o757, "others"),
            (0o777, "group and others"),
        ] {
            fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
            let e = untrusted(&f).unwrap_err();
            assert!(
                e.contains(what) && e.contains(&d.display().to_string()),
                "{e}"
            );
            assert!(untrusted(&d.join("new/state")).is_err());
        }
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o622)).unwrap();
        assert!(
            untrusted(&f).is_err(),
            "the file itself group/world-writable"
        );
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        if euid() == 0 {
            chown(&f, 65534);
            let e = untrusted(&f).unwrap_err();
            assert!(e.contains("uid 65534"), "{e}");
            chown(&f, 0);
            chown(&d, 65534);
            assert!(untrusted(&f).is_err(), "an ancestor owned by nobody");
            chown(&d, 0);
            // Sticky world-writable: fine when the next component is ours, not when it is not.
            fs::set_permissions(&d, fs::Permissions::from_mode(0o1777)).unwrap();
            untrusted(&f).unwrap();
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        // A link is judged by where it leads.
        let l = t.0.join("link");
        symlink(&f, &l).unwrap();
        untrusted(&l).unwrap();
    }
}
