//! Byte-string helpers for the request path, inlined: the strings compared and
//! scanned there (backend names, cookie names and values, header values) are mostly
//! short, where a call into `memcmp` or `memchr` costs more than the work.

/// Byte equality: word loads (8 bytes at a time, the last one overlapping; 4 or 1
/// below 8 bytes) instead of a `memcmp` call.
#[inline]
pub(crate) fn eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        if n >= 4 {
            let w = |s: &[u8], at: usize| u32::from_ne_bytes(s[at..at + 4].try_into().expect("4 bytes"));
            return w(a, 0) == w(b, 0) && w(a, n - 4) == w(b, n - 4);
        }
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let mut at = 0;
    while at + 8 < n {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    word(a, n - 8) == word(b, n - 8)
}

/// Below this many bytes a plain loop beats `memchr` (no call, no setup: most cookie
/// pairs are short); from there on `memchr`'s vectorised search wins. (A
/// word-at-a-time search measured no better than the loop on short pairs.)
const SHORT: usize = 32;

/// Position of the first `needle` in `hay`.
#[inline]
pub(crate) fn find(needle: u8, hay: &[u8]) -> Option<usize> {
    if hay.len() >= SHORT {
        return memchr::memchr(needle, hay);
    }
    hay.iter().position(|&x| x == needle)
}

/// Position of the first of `a`, `b` or `c` in `hay`.
#[inline]
pub(crate) fn find3(a: u8, b: u8, c: u8, hay: &[u8]) -> Option<usize> {
    if hay.len() >= SHORT {
        return memchr::memchr3(a, b, c, hay);
    }
    hay.iter().position(|&x| x == a || x == b || x == c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq_matches_slice_equality_at_every_length() {
        let base: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for n in 0..40 {
            let a = &base[..n];
            assert!(eq(a, a));
            for flip in 0..n {
                let mut b = a.to_vec();
                b[flip] ^= 1;
                assert!(!eq(a, &b), "length {n}, byte {flip}");
            }
            if n > 0 {
                assert!(!eq(a, &base[..n - 1]));
            }
        }
    }

    #[test]
    fn find_agrees_with_memchr_on_short_and_long_haystacks() {
        for len in [0usize, 1, 7, 31, 32, 33, 200] {
            let mut hay: Vec<u8> = (0..len).map(|i| b'a' + (i % 20) as u8).collect();
            assert_eq!(find(b'=', &hay), None);
            assert_eq!(find3(b';', b' ', b'\t', &hay), None);
            for at in [0, len / 2, len.saturating_sub(1)] {
                if at < len {
                    hay[at] = b'=';
                    assert_eq!(find(b'=', &hay), memchr::memchr(b'=', &hay));
                    hay[at] = b'\t';
                    assert_eq!(find3(b';', b' ', b'\t', &hay), memchr::memchr3(b';', b' ', b'\t', &hay));
                    hay[at] = b'a';
                }
            }
        }
    }
}
