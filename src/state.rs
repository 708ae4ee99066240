//! The configuration on disk: the last accepted backends and servers documents, so
//! that after an nginx restart traffic flows at once, before the controller posts
//! again.
//!
//! Each document is one file in a state directory, `<dir>/backends.json` and
//! `<dir>/servers.json`, exactly as posted. [`save`] writes it atomically: a
//! temporary file in the same directory (`.<kind>.json.tmp.<pid>`, mode 0600: the
//! servers document holds private keys), `fsync`, `rename` over the target, `fsync` of
//! the directory; a crash leaves the old file or the new one, never a mix. The
//! directory is created (mode 0700) when missing.
//!
//! [`load`] reads a file back (`None` when there is none); [`load_checked`] also runs
//! the core's checks on it (a fresh [`Core`], nothing published), so a front end can
//! put the result where its workers pick documents up, exactly as it does for an
//! accepted POST. A corrupt or unreadable file is an error naming the file and why:
//! the front end reports it and starts without it.
//!
//! Front ends only ever save a document the core accepted, and save the *latest*
//! accepted one: when two workers accept documents at nearly the same time, each
//! saves what its shared store holds and saves again if the store moved meanwhile
//! (see [`save`]).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{Core, MAX_CONFIG_BYTES};

/// The kinds of document saved: `POST /configuration/backends` and
/// `POST /configuration/servers`.
pub const KINDS: [&str; 2] = ["backends", "servers"];

/// Mode of the saved files: owner only (the servers document holds private keys).
pub const FILE_MODE: u32 = 0o600;

/// Mode of a state directory [`save`] creates.
pub const DIR_MODE: u32 = 0o700;

fn check_kind(kind: &str) -> io::Result<()> {
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown state kind {kind:?} (expected \"backends\" or \"servers\")"),
        ))
    }
}

/// The file holding the document of `kind` in `dir`: `<dir>/<kind>.json`.
pub fn file_path(dir: &Path, kind: &str) -> io::Result<PathBuf> {
    check_kind(kind)?;
    if dir.as_os_str().is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty state directory"));
    }
    Ok(dir.join(format!("{kind}.json")))
}

/// Save `doc`, the document of `kind` (`"backends"` or `"servers"`) the core just
/// accepted, as `<dir>/<kind>.json`, atomically (see the module's documentation).
/// Errors name the file.
///
/// Two processes may save the same kind at once (each uses its own temporary file);
/// whichever renames last wins. A front end where several processes accept documents
/// therefore saves the document its shared store holds and, when the store's
/// generation moved during the save, saves again: the last rename is then always of
/// the latest document.
pub fn save(dir: &Path, kind: &str, doc: &[u8]) -> io::Result<()> {
    let target = file_path(dir, kind)?;
    let context = |what: &str, path: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("state file {}: {what} {}: {e}", target.display(), path.display()))
    };
    if !dir.is_dir() {
        DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(|e| context("mkdir", dir, e))?;
    }
    let tmp = dir.join(format!(".{kind}.json.tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| context("create", &tmp, e))?;
        f.write_all(doc).map_err(|e| context("write", &tmp, e))?;
        f.sync_all().map_err(|e| context("fsync", &tmp, e))?;
        fs::rename(&tmp, &target).map_err(|e| context("rename", &tmp, e))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    // The rename is durable once the directory is.
    let d = File::open(dir).map_err(|e| context("open directory", dir, e))?;
    d.sync_all().map_err(|e| context("fsync directory", dir, e))
}

/// Read the saved document of `kind` in `dir`: `Ok(None)` when there is none (no file,
/// or no directory). A file that cannot be read, is empty or is larger than
/// [`MAX_CONFIG_BYTES`] is an error naming the file and why.
pub fn load(dir: &Path, kind: &str) -> Result<Option<Vec<u8>>, String> {
    let path = file_path(dir, kind).map_err(|e| e.to_string())?;
    let fail = |why: &dyn std::fmt::Display| format!("state file {}: {why}", path.display());
    let mut f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(&e)),
    };
    let meta = f.metadata().map_err(|e| fail(&e))?;
    if !meta.is_file() {
        return Err(fail(&"not a regular file"));
    }
    if meta.len() > MAX_CONFIG_BYTES as u64 {
        return Err(fail(&format_args!("{} bytes, over the limit of {MAX_CONFIG_BYTES} bytes", meta.len())));
    }
    let mut doc = Vec::with_capacity(meta.len() as usize);
    // One byte over the limit is enough to tell a file that grew meanwhile.
    Read::by_ref(&mut f).take(MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut doc).map_err(|e| fail(&e))?;
    if doc.len() > MAX_CONFIG_BYTES {
        return Err(fail(&format_args!("over the limit of {MAX_CONFIG_BYTES} bytes")));
    }
    if doc.is_empty() {
        return Err(fail(&"empty file"));
    }
    Ok(Some(doc))
}

/// [`load`], then the core's checks of `kind` on the document (a fresh core; nothing is
/// published anywhere): `Ok(Some(doc))` only for a document the core accepts, as it
/// would accept a POST of it. A rejected one is an error naming the file and the
/// core's reason.
pub fn load_checked(dir: &Path, kind: &str) -> Result<Option<Vec<u8>>, String> {
    let Some(doc) = load(dir, kind)? else { return Ok(None) };
    check(dir, kind, &doc)?;
    Ok(Some(doc))
}

/// The core's checks of a loaded document of `kind` (see [`load_checked`]).
pub fn check(dir: &Path, kind: &str, doc: &[u8]) -> Result<(), String> {
    let path = file_path(dir, kind).map_err(|e| e.to_string())?;
    let core = Core::new();
    let checked = if kind == "backends" { core.validate_backends(doc) } else { core.validate_servers(doc) };
    checked.map_err(|e| format!("state file {}: rejected: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const BACKENDS: &[u8] = br#"[{"name":"web","endpoints":[{"address":"10.0.0.1","port":"80"}]}]"#;
    const BACKENDS2: &[u8] = br#"[{"name":"web","endpoints":[{"address":"10.0.0.2","port":"80"}]}]"#;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ilb-state-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    fn running_as_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn save_creates_the_directory_and_leaves_no_temporary_file() {
        let dir = tempdir("save").join("nested");
        save(&dir, "backends", BACKENDS).unwrap();
        assert_eq!(names(&dir), ["backends.json"]);
        assert_eq!(fs::read(dir.join("backends.json")).unwrap(), BACKENDS);
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, DIR_MODE);
        assert_eq!(fs::metadata(dir.join("backends.json")).unwrap().permissions().mode() & 0o777, FILE_MODE);
        assert_eq!(load(&dir, "backends").unwrap().as_deref(), Some(BACKENDS));
        assert_eq!(load_checked(&dir, "backends").unwrap().as_deref(), Some(BACKENDS));
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn save_overwrites_and_kinds_are_separate_files() {
        let dir = tempdir("overwrite");
        save(&dir, "backends", BACKENDS).unwrap();
        save(&dir, "backends", BACKENDS2).unwrap();
        save(&dir, "servers", b"{\"servers\":{},\"certificates\":{}}").unwrap();
        assert_eq!(names(&dir), ["backends.json", "servers.json"]);
        assert_eq!(load(&dir, "backends").unwrap().as_deref(), Some(BACKENDS2));
        assert!(load_checked(&dir, "servers").unwrap().is_some());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_or_directory_is_none() {
        let dir = tempdir("missing");
        assert_eq!(load(&dir, "backends").unwrap(), None);
        assert_eq!(load_checked(&dir, "servers").unwrap(), None);
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(load(&dir, "backends").unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_kind_and_empty_directory_are_refused() {
        let dir = tempdir("kind");
        assert_eq!(save(&dir, "general", b"{}").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert!(load(&dir, "../etc/passwd").unwrap_err().contains("unknown state kind"));
        assert!(save(Path::new(""), "backends", BACKENDS).is_err());
        assert!(!dir.exists());
    }

    #[test]
    fn corrupt_file_is_read_but_rejected_with_the_file_name_and_reason() {
        let dir = tempdir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("backends.json"), b"[{\"name\":\"web\",\"endpoi").unwrap();
        fs::write(dir.join("servers.json"), b"\x00\x01garbage").unwrap();
        // Read as it is...
        assert!(load(&dir, "backends").unwrap().is_some());
        // ...but the core rejects it, as it would reject a POST of it.
        let e = load_checked(&dir, "backends").unwrap_err();
        assert!(e.starts_with(&format!("state file {}: rejected: ", dir.join("backends.json").display())), "{e}");
        assert!(e.contains("invalid JSON"), "{e}");
        let e = load_checked(&dir, "servers").unwrap_err();
        assert!(e.contains("servers.json: rejected: "), "{e}");
        // And a core applying it keeps what it had.
        let core = Core::new();
        core.apply_backends(BACKENDS).unwrap();
        let doc = load(&dir, "backends").unwrap().unwrap();
        assert!(core.apply_backends(&doc).is_err());
        assert!(core.has_backend(b"web"));
        assert_eq!(core.generation(), 1);

        fs::write(dir.join("backends.json"), b"").unwrap();
        assert!(load(&dir, "backends").unwrap_err().ends_with("backends.json: empty file"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_in_place_of_the_file_is_an_error() {
        let dir = tempdir("notfile");
        fs::create_dir_all(dir.join("backends.json")).unwrap();
        let e = load(&dir, "backends").unwrap_err();
        assert!(e.contains("backends.json"), "{e}");
        // The rename over a directory fails; no temporary file is left.
        let e = save(&dir, "backends", BACKENDS).unwrap_err();
        assert!(e.to_string().contains("backends.json"), "{e}");
        assert_eq!(names(&dir), ["backends.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_directory_that_is_a_file_is_an_error() {
        let base = tempdir("dirfile");
        fs::create_dir_all(&base).unwrap();
        let dir = base.join("plain-file");
        fs::write(&dir, b"x").unwrap();
        // ENOTDIR, not "no saved document": reported.
        let e = load(&dir, "backends").unwrap_err();
        assert!(e.contains("plain-file/backends.json"), "{e}");
        let e = save(&dir, "backends", BACKENDS).unwrap_err();
        assert!(e.to_string().contains("plain-file"), "{e}");
        assert_eq!(fs::read(&dir).unwrap(), b"x");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn unreadable_file_and_directory_are_errors() {
        if running_as_root() {
            // root reads and writes whatever the modes say; nothing to check here.
            return;
        }
        let dir = tempdir("unreadable");
        save(&dir, "backends", BACKENDS).unwrap();
        let file = dir.join("backends.json");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o000)).unwrap();
        let e = load(&dir, "backends").unwrap_err();
        assert!(e.contains("backends.json") && e.contains("ermission denied"), "{e}");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o000)).unwrap();
        let e = load(&dir, "backends").unwrap_err();
        assert!(e.contains("ermission denied"), "{e}");
        let e = save(&dir, "backends", BACKENDS2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        // The failed save changed nothing.
        assert_eq!(load(&dir, "backends").unwrap().as_deref(), Some(BACKENDS));
        assert_eq!(names(&dir), ["backends.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn saves_from_several_threads_leave_one_whole_document() {
        let dir = tempdir("threads");
        save(&dir, "backends", BACKENDS).unwrap();
        // Each thread is one "process" here only in name (same pid): saves of one
        // process are sequential in nginx, so serialise them per thread group.
        let lock = std::sync::Mutex::new(());
        std::thread::scope(|s| {
            for doc in [BACKENDS, BACKENDS2] {
                let (dir, lock) = (&dir, &lock);
                s.spawn(move || {
                    for _ in 0..20 {
                        let _g = lock.lock().unwrap();
                        save(dir, "backends", doc).unwrap();
                    }
                });
            }
            for _ in 0..50 {
                let got = load(&dir, "backends").unwrap().unwrap();
                assert!(got == BACKENDS || got == BACKENDS2);
            }
        });
        assert_eq!(names(&dir), ["backends.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
