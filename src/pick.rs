//! Per-request pick state and the picked peer.

use std::net::SocketAddr;

/// Peers remembered per request (`ILB_MAX_TRIED` in the C header).
pub const MAX_TRIED: usize = 32;

/// Size of a peer's address text buffer (`ILB_ADDR_MAX` in the C header).
pub const ADDR_MAX: usize = 64;

/// Size of the `Set-Cookie` buffer of a picked peer (`ILB_COOKIE_MAX` in the C header).
pub const COOKIE_MAX: usize = 1024;

/// State of one request across its attempts: the endpoints already tried.
///
/// The layout is `ilb_pick_ctx` of the C header: callers own it (stack, nginx request
/// pool, LuaJIT cdata) and it never touches the heap. Endpoints are remembered by a
/// 64-bit key derived from their address, so the exclusion still holds if a new
/// configuration is published between two attempts of the same request.
#[repr(C)]
#[derive(Debug, Clone)]
pub struct PickCtx {
    tried_len: u32,
    reserved: u32,
    tried: [u64; MAX_TRIED],
}

impl Default for PickCtx {
    fn default() -> Self {
        Self::new()
    }
}

impl PickCtx {
    /// A context for a new request.
    pub const fn new() -> Self {
        PickCtx { tried_len: 0, reserved: 0, tried: [0; MAX_TRIED] }
    }

    /// Forget every attempt (start a new request).
    pub fn reset(&mut self) {
        self.tried_len = 0;
    }

    /// Number of attempts remembered.
    pub fn attempts(&self) -> usize {
        (self.tried_len as usize).min(MAX_TRIED)
    }

    pub(crate) fn tried(&self) -> &[u64] {
        &self.tried[..self.attempts()]
    }

    pub(crate) fn has_tried(&self, key: u64) -> bool {
        self.tried().contains(&key)
    }

    /// Remember a picked endpoint. Past `MAX_TRIED` attempts the first ones stay remembered.
    pub(crate) fn remember(&mut self, key: u64) {
        let n = self.attempts();
        if n < MAX_TRIED && !self.tried[..n].contains(&key) {
            self.tried[n] = key;
            self.tried_len = n as u32 + 1;
        }
    }
}

/// An endpoint chosen by a pick, borrowed from the configuration snapshot for the
/// duration of [`crate::Core::pick_with`]'s callback: the front ends copy what they
/// need (socket address, address text) straight to their own buffers.
#[derive(Clone, Copy, Debug)]
pub struct PeerRef<'a> {
    pub(crate) endpoint: &'a crate::snapshot::Endpoint,
    pub(crate) index: u32,
}

impl<'a> PeerRef<'a> {
    /// The endpoint's socket address.
    #[inline]
    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr
    }

    /// `"10.0.0.1:8080"`, or `"[fd00::1]:8080"` for IPv6 (bracketed, as nginx wants it).
    #[inline]
    pub fn text(&self) -> &'a str {
        &self.endpoint.text
    }

    /// Position of the endpoint in its backend's list.
    #[inline]
    pub fn index(&self) -> u32 {
        self.index
    }

    /// An owned copy, valid whatever is published afterwards.
    pub fn to_peer(&self) -> Peer {
        Peer { addr: self.endpoint.addr, index: self.index, text: AddrText::new(&self.endpoint.text) }
    }
}

/// An endpoint chosen by a pick, copied out of the configuration snapshot so it stays
/// valid whatever is published afterwards.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The endpoint's socket address.
    pub addr: SocketAddr,
    /// Position of the endpoint in its backend's list.
    pub index: u32,
    pub(crate) text: AddrText,
}

impl Peer {
    /// `"10.0.0.1:8080"`, or `"[fd00::1]:8080"` for IPv6 (bracketed, as nginx wants it).
    pub fn text(&self) -> &str {
        self.text.as_str()
    }
}

/// An endpoint's address as text, in a fixed buffer.
#[derive(Clone, Copy)]
pub(crate) struct AddrText {
    len: u8,
    buf: [u8; ADDR_TEXT_MAX],
}

/// Longest address text: "[" + 39 (IPv6) + "]:" + 5 (port). Endpoints never carry
/// an IPv6 scope id (the parser rejects it).
const ADDR_TEXT_MAX: usize = 47;

impl AddrText {
    /// Copy an endpoint's address text (at most `ADDR_TEXT_MAX` bytes: the endpoint
    /// parser admits no IPv6 scope id).
    pub(crate) fn new(text: &str) -> Self {
        let mut buf = [0u8; ADDR_TEXT_MAX];
        let len = text.len().min(ADDR_TEXT_MAX);
        buf[..len].copy_from_slice(&text.as_bytes()[..len]);
        AddrText { len: len as u8, buf }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    pub(crate) fn as_str(&self) -> &str {
        // Built from SocketAddr's Display output, which is ASCII.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl std::fmt::Debug for AddrText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctx_remembers_up_to_capacity() {
        let mut c = PickCtx::new();
        for k in 0..40u64 {
            c.remember(k + 100);
        }
        assert_eq!(c.attempts(), MAX_TRIED);
        assert!(c.has_tried(100) && c.has_tried(131) && !c.has_tried(132));
        c.remember(100);
        assert_eq!(c.attempts(), MAX_TRIED);
        c.reset();
        assert_eq!(c.attempts(), 0);
        assert!(!c.has_tried(100));
    }

    #[test]
    fn address_text_brackets_ipv6() {
        let v4: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let v6: SocketAddr = "[fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535".parse().unwrap();
        assert_eq!(AddrText::new(&v4.to_string()).as_str(), "10.1.2.3:8080");
        assert_eq!(AddrText::new(&v6.to_string()).as_str(), "[fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
    }

    #[test]
    fn layout_matches_header() {
        assert_eq!(std::mem::size_of::<PickCtx>(), 8 + 8 * MAX_TRIED);
        assert_eq!(std::mem::align_of::<PickCtx>(), 8);
    }
}
