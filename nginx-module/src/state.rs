//! `ingress_lb_state_path DIR;` (http): the accepted documents on disk, so that a
//! restarted nginx serves them before the controller posts again. The core decides
//! everything ([`ingress_lb::state`]): where the files are, how they are written
//! (atomically, mode 0600) and whether a saved document can be used (the core's checks
//! of a POST). This file only wires it:
//!
//! * [`load_at_start`], from `init_module` (the master, or the single process, before
//!   any worker exists): for each zone that holds no document yet — a start, or a
//!   zone created anew by a reload — the saved document, checked by the core, is
//!   stored in the zone as an accepted POST stores it; every worker applies it from
//!   the zone when it starts. A corrupt or unreadable file is logged at `error`
//!   (naming the file and why) and ignored. Not under `nginx -t`.
//! * [`save_latest`], from the configuration endpoint after a document was accepted
//!   and stored in its zone: the zone's document is saved; if the zone moved on
//!   meanwhile (another worker stored a newer one), it is saved again, so the file
//!   always ends with the latest accepted document. Only accepted documents reach the
//!   zone, so only those are saved.

use std::path::Path;

use ngx::ffi::{ngx_log_t, NGX_LOG_ERR, NGX_LOG_NOTICE};
use ngx::ngx_log_error;

use crate::conf::MainConf;
use crate::shared::{force_resync, Kind, StoreError, Zone};

/// Store the saved documents in the zones that hold none (see the module's documentation).
pub(crate) fn load_at_start(mcf: &MainConf, log: *mut ngx_log_t) {
    // SAFETY: a plain global of nginx, written once while it reads its options.
    if unsafe { ngx::ffi::ngx_test_config } != 0 {
        return;
    }
    let Some(dir) = mcf.state_dir() else { return };
    for kind in [Kind::Backends, Kind::Servers] {
        let Some(zone) = mcf.zone_of(kind) else { continue };
        if zone.generation() != 0 {
            // Kept over a reload: what it holds is newer than any file.
            continue;
        }
        let doc = match ingress_lb::state::load_checked(dir, kind.what()) {
            Ok(Some(doc)) => doc,
            Ok(None) => continue,
            Err(e) => {
                ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "ingress_lb: {}; the saved {} configuration is ignored",
                    e,
                    kind.what()
                );
                continue;
            }
        };
        match zone.store(&doc) {
            Ok(_) => {
                // Stored here, applied by no core yet: every worker forked from this
                // process (or this process itself) applies it at start.
                force_resync(kind);
                ngx_log_error!(
                    NGX_LOG_NOTICE,
                    log,
                    "ingress_lb: {} configuration ({} bytes) loaded from {}",
                    kind.what(),
                    doc.len(),
                    dir.display()
                );
            }
            Err(StoreError::TooLarge { size, cap }) => {
                ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "ingress_lb: the saved {} configuration in {} is {} bytes, larger than the {} bytes \
                     the shared zone can hold (raise {}); ignored",
                    kind.what(),
                    dir.display(),
                    size,
                    cap,
                    kind.directive()
                );
            }
        }
    }
}

/// Save the document of `zone` (just stored by this worker) in `dir`, again while the
/// zone moves on during the save (see the module's documentation). Failures are logged.
pub(crate) fn save_latest(log: *mut ngx_log_t, dir: &Path, kind: Kind, zone: &Zone) {
    // Bounded: a zone changing faster than files can be written is saved by the
    // worker that changes it.
    for _ in 0..8 {
        let (generation, doc) = zone.snapshot();
        let Some(doc) = doc else { return };
        if let Err(e) = ingress_lb::state::save(dir, kind.what(), &doc) {
            ngx_log_error!(NGX_LOG_ERR, log, "ingress_lb: could not save the {} configuration: {}", kind.what(), e);
            return;
        }
        if zone.generation() == generation {
            return;
        }
    }
}
