//! Per-endpoint ewma statistics in a fixed-size, lock-free table that several
//! processes (nginx workers) may share.
//!
//! # Layout
//!
//! One region of memory: a [`Header`] of [`HEADER_SIZE`] bytes, then `capacity`
//! slots of 16 bytes (`capacity` a power of two). Every field is a 64-bit atomic, so
//! processes that map the same memory read and write it with plain atomic
//! instructions: no lock, nothing a crashed process could leave held.
//!
//! A slot is `key` (the endpoint's [`crate::snapshot::endpoint_key`], 0 = empty)
//! and `state`, one word packing the ewma (an `f32`, seconds, in the high half) and
//! the time it was last updated (milliseconds since the header's time base, wrapping
//! `u32`, in the low half; never 0 in a written state). `state == 0` means "claimed but
//! not initialised yet". Because both values live in one word, an update is a single
//! compare-and-swap: concurrent updates of one endpoint are all applied (a loser
//! retries on the new value) and a reader never sees a value of one update with the
//! time of another.
//!
//! # Open addressing
//!
//! Linear probing from `key & mask`, within a window of [`PROBE_WINDOW`] slots: a key
//! lives in one of the 32 slots from its home, so a lookup reads at most 32 slots (512
//! contiguous bytes) and stops at the first empty one. A key is claimed by a
//! compare-and-swap of a slot's key: a stale slot of the window (reclaimed, see below)
//! or the first empty one. Slots are never emptied again, which keeps lookups correct
//! without deletion. The table has twice as many slots as the endpoints it is sized for,
//! so windows rarely fill; when a key's window holds neither an empty nor a stale slot,
//! the endpoint gets none ([`StatsCounters::full`]).
//!
//! # Races accepted
//!
//! - Two processes inserting the same new endpoint at the same moment may, rarely,
//!   claim two slots for it (one through an empty slot, one through a stale one);
//!   lookups use the first in probe order, the other is never updated again and is
//!   reclaimed once stale.
//! - Reclaiming a stale slot (not updated for [`STALE_AFTER_SECS`]) for a new endpoint
//!   while a process is updating the old one: the old endpoint's update is dropped (the
//!   updater re-checks the key before each compare-and-swap), or lands before the
//!   reclaim and is overwritten. A pick reading the slot at that instant may score the
//!   old endpoint with the new one's value: one decision, nothing kept.
//! - Times are per-process readings of the clock (`ngx.now()`): a state written by
//!   another worker a few milliseconds "in the future" counts as written now.
//! - Times wrap every 49.7 days: a state more than 60 s "in the future" is taken as
//!   ancient (fully decayed, stale). An endpoint left without samples for a multiple of
//!   49.7 days (± 60 s) would look recently updated once; its next samples correct it.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes before the first slot.
pub const HEADER_SIZE: usize = 128;

/// Bytes per slot.
pub const SLOT_SIZE: usize = 16;

/// Most endpoints a table may be created for ([`SharedStats::anonymous`],
/// [`SharedStats::region_size`]): 16 Mi endpoints, a 512 MiB region.
pub const MAX_SLOTS: u32 = 1 << 24;

/// Smallest table (slots).
const MIN_CAPACITY: usize = 16;

/// Slots a key may be stored in, from its home slot on.
pub const PROBE_WINDOW: usize = 32;

/// "ILBEWMA\0" little-endian: the region holds an initialised table.
const MAGIC: u64 = u64::from_le_bytes(*b"ILBEWMA\0");

/// Layout version; a region written by another version is refused, not reused.
const VERSION: u64 = 1;

/// A slot whose state was not updated for this long may be taken by a new endpoint.
/// By then its ewma has decayed by e^-30: nothing of value is lost.
pub const STALE_AFTER_SECS: u64 = 300;

/// A state time more than this far ahead of `now` is taken as a wrapped (ancient) one
/// rather than clock skew between workers.
const FUTURE_TOLERANCE_MS: i32 = 60_000;

/// Empty slot key. An endpoint key of 0 is stored as 1.
const EMPTY: u64 = 0;

/// The start of a region. Every field is atomic: processes share it.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU64,
    /// Slots in the table (a power of two).
    capacity: AtomicU64,
    /// Endpoints the table is sized for (half the capacity).
    limit: AtomicU64,
    /// Time base: milliseconds since the Unix epoch when the table was created.
    base_ms: AtomicU64,
    /// The key of a fixed address computed by the creator: a process whose keys differ
    /// (another build) must not attach.
    key_check: AtomicU64,
    /// Slots claimed.
    used: AtomicU64,
    /// Insertions that found no slot (the table was full around the key's home).
    full: AtomicU64,
    /// Stale slots given to new endpoints.
    reclaimed: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);

#[repr(C)]
pub(crate) struct Slot {
    key: AtomicU64,
    state: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_SIZE);

/// Who releases the memory.
enum Backing {
    /// An anonymous mapping of `len` bytes, unmapped on drop.
    Mmap { len: usize },
    /// Memory owned by someone else (an nginx shared zone).
    Borrowed,
}

/// Why [`SharedStats::in_region`] refused a region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// The pointer is NULL or not 8-byte aligned.
    #[error("stats region must be non-null and 8-byte aligned")]
    Misaligned,
    /// The region cannot hold a table of the smallest size.
    #[error("stats region of {len} bytes is too small (at least {need} bytes)")]
    TooSmall { len: usize, need: usize },
    /// The region holds a table of another version, another key scheme, or larger than
    /// the region.
    #[error("stats region holds an incompatible table: {0}")]
    Incompatible(&'static str),
}

/// Counters of a table, for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsCounters {
    /// Slots in the table.
    pub capacity: u64,
    /// Endpoints the table is sized for (half its slots); more may fit.
    pub limit: u64,
    /// Slots used (stale slots reused for new endpoints count once).
    pub used: u64,
    /// Insertions that found no slot because the table was full around the key's home
    /// (one endpoint may count several times: each sample and configuration change
    /// tries again). Such endpoints are balanced without statistics: see [`SharedStats`].
    pub full: u64,
    /// Stale slots reclaimed for new endpoints.
    pub reclaimed: u64,
}

/// Ewma statistics of endpoints, in memory that processes may share: an anonymous
/// shared mapping inherited across `fork` ([`SharedStats::anonymous`]), a region
/// provided by the caller such as an nginx shared zone ([`SharedStats::in_region`]),
/// or process-local memory (the default of a [`crate::Core`]).
///
/// Lock-free: every access is an atomic load, store or compare-and-swap of one 64-bit
/// word. When the table is full, an endpoint without a slot is balanced without
/// statistics (it neither attracts nor repels traffic: a pick involving it is a uniform
/// choice) and [`StatsCounters::full`] counts it.
pub struct SharedStats {
    base: NonNull<u8>,
    mask: usize,
    base_ms: u64,
    backing: Backing,
}

// SAFETY: the table is only accessed through atomics; the pointer stays valid for the
// life of the value (owned mapping, or a region the creator of the value vouched for).
unsafe impl Send for SharedStats {}
// SAFETY: as above: shared access is atomic only.
unsafe impl Sync for SharedStats {}

impl std::fmt::Debug for SharedStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStats").field("counters", &self.counters()).finish()
    }
}

/// Slots for `endpoints`: twice as many, as a power of two.
fn capacity_for(endpoints: u32) -> usize {
    (endpoints as usize * 2).max(MIN_CAPACITY).next_power_of_two()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Seconds since the Unix epoch, from the system clock.
pub(crate) fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The key of a fixed documentation address: equal in every process that computes
/// endpoint keys the same way.
fn key_check() -> u64 {
    crate::snapshot::endpoint_key(&std::net::SocketAddr::from(([192, 0, 2, 1], 80)))
}

fn slot_key(key: u64) -> u64 {
    if key == EMPTY {
        1
    } else {
        key
    }
}

/// Pack an ewma (seconds) and a time (table milliseconds) into a state word.
#[inline]
pub(crate) fn encode(ewma: f64, t: u32) -> u64 {
    let t = if t == 0 { 1 } else { t };
    ((ewma as f32).to_bits() as u64) << 32 | t as u64
}

/// Unpack a state word written by [`encode`]; a garbage value gives ewma 0.
#[inline]
pub(crate) fn decode(state: u64) -> (f64, u32) {
    let ewma = f32::from_bits((state >> 32) as u32) as f64;
    let ewma = if ewma.is_finite() && ewma >= 0.0 { ewma } else { 0.0 };
    (ewma, state as u32)
}

/// Milliseconds from `then` to `now` (table times), `None` for a time so far ahead
/// that it must be a wrapped, ancient one.
#[inline]
fn age_ms(now: u32, then: u32) -> Option<u32> {
    let d = now.wrapping_sub(then) as i32;
    if d >= 0 {
        Some(d as u32)
    } else if d > -FUTURE_TOLERANCE_MS {
        Some(0)
    } else {
        None
    }
}

/// The stock formula's decay weight for an age, `exp(-td / decay)`.
#[inline]
fn weight(age: Option<u32>) -> f64 {
    match age {
        Some(ms) => (-(ms as f64) / (1000.0 * crate::balancer::EWMA_DECAY_SECS)).exp(),
        None => 0.0,
    }
}

impl SharedStats {
    /// Bytes of a region holding statistics for up to `slots` endpoints (the table has
    /// twice as many slots, as a power of two, at least 16), header included.
    pub fn region_size(slots: u32) -> usize {
        HEADER_SIZE + capacity_for(slots) * SLOT_SIZE
    }

    /// Statistics for up to `slots` endpoints in an anonymous shared mapping
    /// (`mmap(MAP_SHARED | MAP_ANONYMOUS)`). Processes forked after this call share
    /// them: create it in the nginx master (`init_by_lua`) before the workers fork.
    pub fn anonymous(slots: u32) -> io::Result<SharedStats> {
        Self::mapped(slots, libc::MAP_SHARED)
    }

    /// Statistics in private memory of this process (what a core uses until
    /// [`crate::Core::use_stats`]).
    pub(crate) fn local(slots: u32) -> io::Result<SharedStats> {
        Self::mapped(slots, libc::MAP_PRIVATE)
    }

    fn mapped(slots: u32, share: libc::c_int) -> io::Result<SharedStats> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ewma statistics slots must be in 1..={MAX_SLOTS}, not {slots}"),
            ));
        }
        let len = Self::region_size(slots);
        // SAFETY: a fresh anonymous mapping: no address hint, no file; the kernel checks
        // the rest and reports failure as MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                share | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        // SAFETY: `len` bytes mapped read-write just above, page aligned, zero-filled,
        // and no one else can see them yet.
        let mut stats = unsafe { Self::init(base, len, capacity_for(slots)) };
        stats.backing = Backing::Mmap { len };
        Ok(stats)
    }

    /// Statistics in a region the caller provides, typically the memory of an nginx
    /// shared zone: `ptr` must be 8-byte aligned; the table takes the largest power of
    /// two of slots that fits in `len` bytes (see [`SharedStats::region_size`]).
    ///
    /// The first call on a region initialises it; later calls (other processes, or the
    /// same zone after an nginx reload) find the header and attach to the statistics as
    /// they are. A region holding a table of another layout version or key scheme is
    /// refused with [`StatsError::Incompatible`] (use another zone, or restart).
    ///
    /// # Safety
    ///
    /// `ptr` must point to `len` bytes readable and writable, mapped at this address
    /// (in every process sharing it) for as long as the returned value and every
    /// [`crate::Core`] using it live; nothing else may write to them. Initialisation
    /// must not run concurrently on the same region: call it first where only one
    /// process runs (nginx: the zone's init callback in the master, or under the
    /// zone's mutex); attaching to an initialised region is safe from any process.
    pub unsafe fn in_region(ptr: *mut u8, len: usize) -> Result<SharedStats, StatsError> {
        let Some(base) = NonNull::new(ptr) else {
            return Err(StatsError::Misaligned);
        };
        if ptr as usize % 8 != 0 {
            return Err(StatsError::Misaligned);
        }
        let need = HEADER_SIZE + MIN_CAPACITY * SLOT_SIZE;
        if len < need {
            return Err(StatsError::TooSmall { len, need });
        }
        // SAFETY: aligned, at least HEADER_SIZE bytes valid for reads and writes per the
        // contract; Header is made of atomics only, for which any bit pattern is valid.
        let header = unsafe { &*ptr.cast::<Header>() };
        if header.magic.load(Ordering::Acquire) == MAGIC {
            if header.version.load(Ordering::Relaxed) != VERSION {
                return Err(StatsError::Incompatible("layout version differs"));
            }
            if header.key_check.load(Ordering::Relaxed) != key_check() {
                return Err(StatsError::Incompatible("endpoint keys are computed differently"));
            }
            let capacity = header.capacity.load(Ordering::Relaxed) as usize;
            if !capacity.is_power_of_two()
                || capacity < MIN_CAPACITY
                || capacity > (len - HEADER_SIZE) / SLOT_SIZE
                || header.limit.load(Ordering::Relaxed) != capacity as u64 / 2
            {
                return Err(StatsError::Incompatible("slot count does not fit the region"));
            }
            let base_ms = header.base_ms.load(Ordering::Relaxed);
            return Ok(SharedStats { base, mask: capacity - 1, base_ms, backing: Backing::Borrowed });
        }
        // Largest power of two of slots that fits.
        let fit = (len - HEADER_SIZE) / SLOT_SIZE;
        let capacity = 1usize << (usize::BITS - 1 - fit.leading_zeros());
        // SAFETY: the region is valid per the contract and holds the header and
        // `capacity` slots; no other process initialises it concurrently (contract).
        Ok(unsafe { Self::init(base, len, capacity) })
    }

    /// Write an empty table into `base`.
    ///
    /// # Safety
    /// `base` is 8-byte aligned and valid for `HEADER_SIZE + capacity * SLOT_SIZE <= len`
    /// bytes of reads and writes, and no other process uses it yet.
    unsafe fn init(base: NonNull<u8>, len: usize, capacity: usize) -> SharedStats {
        debug_assert!(capacity.is_power_of_two() && HEADER_SIZE + capacity * SLOT_SIZE <= len);
        let base_ms = now_ms().saturating_sub(1000);
        let stats = SharedStats { base, mask: capacity - 1, base_ms, backing: Backing::Borrowed };
        let header = stats.header();
        // Not magic until fully written, in case a process looks early.
        header.magic.store(0, Ordering::Relaxed);
        for slot in stats.slots() {
            slot.key.store(EMPTY, Ordering::Relaxed);
            slot.state.store(0, Ordering::Relaxed);
        }
        header.version.store(VERSION, Ordering::Relaxed);
        header.capacity.store(capacity as u64, Ordering::Relaxed);
        header.limit.store(capacity as u64 / 2, Ordering::Relaxed);
        header.base_ms.store(base_ms, Ordering::Relaxed);
        header.key_check.store(key_check(), Ordering::Relaxed);
        header.used.store(0, Ordering::Relaxed);
        header.full.store(0, Ordering::Relaxed);
        header.reclaimed.store(0, Ordering::Relaxed);
        header.magic.store(MAGIC, Ordering::Release);
        stats
    }

    #[inline]
    fn header(&self) -> &Header {
        // SAFETY: `base` points to an initialised, aligned header for the life of self.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    #[inline]
    fn slots(&self) -> &[Slot] {
        // SAFETY: `mask + 1` slots follow the header in the region, which lives as long
        // as self; Slot is made of atomics, valid for any bit pattern.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(HEADER_SIZE).cast::<Slot>(), self.mask + 1) }
    }

    /// The counters of the table.
    pub fn counters(&self) -> StatsCounters {
        let h = self.header();
        StatsCounters {
            capacity: self.mask as u64 + 1,
            limit: h.limit.load(Ordering::Relaxed),
            used: h.used.load(Ordering::Relaxed),
            full: h.full.load(Ordering::Relaxed),
            reclaimed: h.reclaimed.load(Ordering::Relaxed),
        }
    }

    /// A time in seconds since the Unix epoch as table milliseconds (wrapping).
    #[inline]
    pub(crate) fn time(&self, now: f64) -> u32 {
        let ms = (now * 1000.0).round() as i64;
        ms.wrapping_sub(self.base_ms as i64) as u32
    }

    /// Slots probed for a key.
    #[inline]
    fn window(&self) -> usize {
        PROBE_WINDOW.min(self.mask + 1)
    }

    /// The slot of `key`, if it has one.
    #[inline]
    pub(crate) fn find(&self, key: u64) -> Option<&Slot> {
        let key = slot_key(key);
        let slots = self.slots();
        let mut i = key as usize & self.mask;
        for _ in 0..self.window() {
            let slot = &slots[i];
            match slot.key.load(Ordering::Acquire) {
                k if k == key => return Some(slot),
                EMPTY => return None,
                _ => i = (i + 1) & self.mask,
            }
        }
        None
    }

    /// The decayed score of `key` at table time `now` (the stock formula with a zero
    /// sample), `None` if it has no initialised slot.
    #[inline]
    pub(crate) fn score(&self, key: u64, now: u32) -> Option<f64> {
        let state = self.find(key)?.state.load(Ordering::Acquire);
        if state == 0 {
            return None;
        }
        let (ewma, t) = decode(state);
        Some(ewma * weight(age_ms(now, t)))
    }

    /// The slot of `key`, claiming one (stale at `now`, or empty) if it has none.
    /// `None` when its window is full (counted) or under heavy contention.
    pub(crate) fn find_or_insert(&self, key: u64, now: u32) -> Option<&Slot> {
        let key = slot_key(key);
        let header = self.header();
        let slots = self.slots();
        for _ in 0..4 {
            let mut i = key as usize & self.mask;
            let mut empty = None;
            let mut stale = None;
            for _ in 0..self.window() {
                let slot = &slots[i];
                match slot.key.load(Ordering::Acquire) {
                    k if k == key => return Some(slot),
                    EMPTY => {
                        empty = Some(slot);
                        break;
                    }
                    k => {
                        if stale.is_none() && is_stale(slot.state.load(Ordering::Relaxed), now) {
                            stale = Some((slot, k));
                        }
                    }
                }
                i = (i + 1) & self.mask;
            }
            let (slot, old) = match (stale, empty) {
                (Some(s), _) => s,
                (None, Some(slot)) => (slot, EMPTY),
                (None, None) => break,
            };
            match slot.key.compare_exchange(old, key, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if old == EMPTY => {
                    header.used.fetch_add(1, Ordering::Relaxed);
                    return Some(slot);
                }
                Ok(_) => {
                    // Updaters of the old key re-check the key before their CAS, and
                    // this store changes the state they compare against.
                    slot.state.store(0, Ordering::Release);
                    header.reclaimed.fetch_add(1, Ordering::Relaxed);
                    return Some(slot);
                }
                Err(k) if k == key => return Some(slot),
                Err(_) => {} // another key took it: look again
            }
        }
        header.full.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Fold a sample `rtt` (seconds) taken at table time `now` into `key`'s ewma with
    /// the stock formula; a key without a slot gets one (its first sample is its ewma).
    pub(crate) fn update(&self, key: u64, rtt: f64, now: u32) {
        let Some(slot) = self.find_or_insert(key, now) else { return };
        let key = slot_key(key);
        for _ in 0..64 {
            let state = slot.state.load(Ordering::Acquire);
            if slot.key.load(Ordering::Acquire) != key {
                return; // reclaimed meanwhile: drop the sample
            }
            let next = if state == 0 {
                encode(rtt, now)
            } else {
                let (ewma, t) = decode(state);
                let w = weight(age_ms(now, t));
                encode(ewma * w + rtt * (1.0 - w), now)
            };
            if next == state
                || slot.state.compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            {
                return;
            }
        }
    }

    /// Give `key` the ewma `value` at `now` if it has no statistics yet (a new
    /// endpoint); an endpoint that has some keeps them.
    pub(crate) fn seed(&self, key: u64, value: f64, now: u32) {
        if let Some(slot) = self.find_or_insert(key, now) {
            let _ = slot.state.compare_exchange(0, encode(value, now), Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// The raw (ewma, time) of `key`, for tests.
    #[cfg(test)]
    pub(crate) fn raw(&self, key: u64) -> Option<(f64, u32)> {
        let s = self.find(key)?.state.load(Ordering::Acquire);
        (s != 0).then(|| decode(s))
    }
}

/// A slot whose state was not updated for [`STALE_AFTER_SECS`] at `now`.
fn is_stale(state: u64, now: u32) -> bool {
    if state == 0 {
        return false; // being initialised
    }
    match age_ms(now, decode(state).1) {
        Some(age) => age as u64 > STALE_AFTER_SECS * 1000,
        None => true,
    }
}

impl Drop for SharedStats {
    fn drop(&mut self) {
        if let Backing::Mmap { len } = self.backing {
            // SAFETY: the mapping of `len` bytes at `base` was created by `mapped` and is
            // owned by this value only (other processes have their own mapping of it).
            unsafe { libc::munmap(self.base.as_ptr().cast(), len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(SharedStats::region_size(1), HEADER_SIZE + 16 * SLOT_SIZE);
        assert_eq!(SharedStats::region_size(1000), HEADER_SIZE + 2048 * SLOT_SIZE);
        assert_eq!(SharedStats::region_size(1024), HEADER_SIZE + 2048 * SLOT_SIZE);
        let s = SharedStats::anonymous(1000).unwrap();
        let c = s.counters();
        assert_eq!((c.capacity, c.limit, c.used, c.full), (2048, 1024, 0, 0));
        assert!(SharedStats::anonymous(0).is_err());
        assert!(SharedStats::anonymous(MAX_SLOTS + 1).is_err());
    }

    #[test]
    fn encode_roundtrip() {
        let (e, t) = decode(encode(0.25, 12345));
        assert!((e - 0.25).abs() < 1e-9 && t == 12345);
        assert_eq!(decode(encode(1.0, 0)).1, 1, "time 0 is stored as 1: a written state is never 0");
        assert_eq!(decode(0xffff_ffff_0000_0001).0, 0.0, "a NaN from garbage reads as 0");
    }

    #[test]
    fn ages_wrap() {
        assert_eq!(age_ms(10, 5), Some(5));
        assert_eq!(age_ms(5, 10), Some(0), "a little ahead: clock skew between workers");
        assert_eq!(age_ms(3, u32::MAX - 1), Some(5), "wrapped");
        assert_eq!(age_ms(0, 100_000), None, "far ahead: an ancient, wrapped time");
    }

    #[test]
    fn insert_find_full_and_reclaim() {
        let s = SharedStats::anonymous(8).unwrap(); // 16 slots: one window
        let t0 = s.time(now_secs());
        let k = |n: u64| n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for n in 1..=16 {
            s.update(k(n), 0.1, t0);
        }
        assert_eq!(s.counters().used, 16, "fits beyond the size it was made for");
        assert!(s.find_or_insert(999, t0).is_none(), "full");
        assert_eq!(s.counters().full, 1);
        // Every key is found where it was put, with its value.
        for n in 1..=16 {
            let (e, _) = s.raw(k(n)).unwrap();
            assert!((e - 0.1).abs() < 1e-6);
        }
        // Later than STALE_AFTER_SECS: the new key takes a stale slot.
        let later = t0.wrapping_add((STALE_AFTER_SECS as u32 + 1) * 1000);
        assert!(s.find_or_insert(999, later).is_some());
        assert_eq!(s.counters().reclaimed, 1);
        assert_eq!(s.counters().used, 16);
        assert!(s.raw(999).is_none(), "a reclaimed slot starts uninitialised");
        s.update(999, 0.5, later);
        assert!((s.raw(999).unwrap().0 - 0.5).abs() < 1e-6);
        assert_eq!((1..=16).filter(|&n| s.find(k(n)).is_some()).count(), 15, "one old key gave its slot");
    }

    #[test]
    fn windows_bound_probes() {
        // Keys with the same home: the 33rd finds no room in its window even though
        // the table has empty slots elsewhere.
        let s = SharedStats::anonymous(1000).unwrap(); // 2048 slots
        let t = s.time(now_secs());
        for n in 0..PROBE_WINDOW as u64 {
            assert!(s.find_or_insert(5 + (n << 20), t).is_some());
        }
        assert!(s.find_or_insert(5 + (99 << 20), t).is_none());
        assert!(s.find(5 + (99 << 20)).is_none());
        assert!(s.find(5 + (31 << 20)).is_some());
    }

    #[test]
    fn key_zero_is_usable() {
        let s = SharedStats::anonymous(4).unwrap();
        let t = s.time(now_secs());
        s.update(0, 0.3, t);
        assert!(s.score(0, t).is_some());
    }

    #[test]
    fn region_initialises_then_attaches() {
        let len = SharedStats::region_size(100);
        let mut buf = vec![0xa5u64; len / 8]; // garbage, 8-byte aligned
        let ptr = buf.as_mut_ptr().cast::<u8>();
        // SAFETY: `buf` outlives both values and is only used through them.
        let first = unsafe { SharedStats::in_region(ptr, len) }.unwrap();
        assert_eq!(first.counters().capacity, 256);
        assert_eq!(first.counters().used, 0, "garbage was cleared");
        let t = first.time(now_secs());
        first.update(42, 0.2, t);
        // SAFETY: as above.
        let second = unsafe { SharedStats::in_region(ptr, len) }.unwrap();
        assert!((second.raw(42).unwrap().0 - 0.2).abs() < 1e-6, "attached, not reinitialised");
        assert_eq!(second.base_ms, first.base_ms);
        // A larger region holding this table attaches too (the zone may be larger).
        // SAFETY: as above (a shorter view of the same buffer is refused, not used).
        assert!(matches!(unsafe { SharedStats::in_region(ptr, 200) }, Err(StatsError::TooSmall { .. })));
        // SAFETY: as above.
        let err = unsafe { SharedStats::in_region(ptr, HEADER_SIZE + 64 * SLOT_SIZE) }.unwrap_err();
        assert!(matches!(err, StatsError::Incompatible(_)), "{err}");
        first.header().version.store(VERSION + 1, Ordering::Relaxed);
        // SAFETY: as above.
        assert!(matches!(unsafe { SharedStats::in_region(ptr, len) }, Err(StatsError::Incompatible(_))));
        // SAFETY: misaligned pointer is refused before any access.
        assert_eq!(unsafe { SharedStats::in_region(ptr.add(1), len - 8) }.unwrap_err(), StatsError::Misaligned);
        drop((first, second));
        drop(buf);
    }

    #[test]
    fn concurrent_updates_are_all_applied() {
        // Many threads folding samples into one key with the same timestamp after the
        // first: only the first sample counts at a given millisecond (weight 1), so use
        // distinct times; the CAS loop must never lose the last word or tear it.
        let s = std::sync::Arc::new(SharedStats::anonymous(64).unwrap());
        let t0 = s.time(now_secs());
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        s.update(7, 0.1 + n as f64 * 0.01, t0.wrapping_add(i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (e, _) = s.raw(7).unwrap();
        assert!((0.1..=0.13).contains(&e), "{e}");
    }
}
