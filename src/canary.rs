//! Canary routing: whether a request for a primary backend goes to one of its
//! `alternativeBackends`, by ingress-nginx's traffic shaping rules.
//!
//! Each alternative's `trafficShapingPolicy` is compiled with its backend ([`Policy`],
//! reused while the backend's JSON does not change; a `headerPattern` is compiled
//! once, there). Each primary's [`Plan`] is built with the snapshot: its
//! alternatives, in list order, and the cumulative weight thresholds. A decision
//! ([`Plan::decide`]) reads the request's headers and `Cookie` header in place and
//! never allocates.
//!
//! Rules, in ingress-nginx's order (`balancer.lua`, `route_to_alternative_balancer`):
//! 1. the request is affinitized to the primary (its sticky cookie) → primary;
//! 2. affinitized to an alternative → that alternative;
//! 3. the policy's header is present: a non-empty `headerValue` that equals it, else
//!    a non-empty `headerPattern` that matches it (unanchored) → alternative, no
//!    match falls through; without either, `always` → alternative, `never` →
//!    primary, anything else falls through;
//! 4. the policy's cookie: `always` → alternative, `never` → primary, anything else
//!    falls through;
//! 5. weight: the alternative with probability `weight / weightTotal` (`weightTotal`
//!    is 100 unless set above 100).
//!
//! Beyond ingress-nginx, which uses only the first alternative: rules 2–4 look at
//! each alternative in list order (the first decisive answer wins); in rule 5 each
//! alternative gets its own share and the primary the rest. An alternative without
//! endpoints is never chosen: the request stays on the primary rather than fail.

use regex::bytes::{Regex, RegexBuilder};

use crate::balancer::AlgorithmKind;
use crate::config::TrafficShapingPolicy;
use crate::error::{BackendLabel, ConfigError};
use crate::snapshot::Backend;

/// Longest `headerPattern` compiled, in bytes.
pub(crate) const PATTERN_MAX: usize = 1024;

/// Memory bound of a compiled pattern (and of its lazy DFA): a pattern that needs
/// more is refused when the configuration is applied. Matching is linear in the
/// header's length whatever the pattern (the `regex` crate never backtracks).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// A canary's compiled `trafficShapingPolicy`.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    /// The header name as nginx's `$http_<name>` spells it: lower case, `-` as `_`.
    /// Empty: no header rule.
    pub(crate) header: Box<[u8]>,
    header_value: Box<[u8]>,
    pattern: Pattern,
    /// Empty: no cookie rule.
    cookie: Box<[u8]>,
    weight: u32,
    /// 100 unless `weightTotal` is above 100, as ingress-nginx reads it.
    weight_total: u32,
}

/// A compiled `headerPattern`.
#[derive(Debug, Default)]
enum Pattern {
    /// No pattern (or a `headerValue`, which takes precedence).
    #[default]
    None,
    Regex(Regex),
    /// Invalid or too large (a warning said so): the rule never matches.
    Disabled,
}

/// What one alternative's header or cookie rule says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Alternative,
    Primary,
    FallThrough,
}

/// Request headers a decision may read.
///
/// `name` is given as nginx's `$http_<name>` spells it (lower case, `_` for `-`):
/// an implementation compares names case-insensitively with `-` and `_` equal, and
/// returns the first header of that name, as the variable does.
pub trait Headers {
    fn get(&self, name: &[u8]) -> Option<&[u8]>;
}

/// nginx's spelling of a header name in `$http_<name>`.
#[inline]
pub fn header_name_byte(b: u8) -> u8 {
    if b == b'-' {
        b'_'
    } else {
        b.to_ascii_lowercase()
    }
}

/// True if header name `name` (as received) is `key` (as [`header_name_byte`] spells it).
#[inline]
pub fn header_name_is(name: &[u8], key: &[u8]) -> bool {
    name.len() == key.len() && name.iter().zip(key).all(|(&a, &b)| header_name_byte(a) == b)
}

/// Headers as `(name, value)` pairs, names as received.
impl Headers for [(&[u8], &[u8])] {
    fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|(n, _)| header_name_is(n, name)).map(|&(_, v)| v)
    }
}

/// No headers.
impl Headers for () {
    fn get(&self, _: &[u8]) -> Option<&[u8]> {
        None
    }
}

impl<H: Headers + ?Sized> Headers for &H {
    fn get(&self, name: &[u8]) -> Option<&[u8]> {
        (**self).get(name)
    }
}

impl Policy {
    /// Compile backend `name`'s policy. An invalid `headerPattern` disables that rule
    /// with a warning; negative or absurd numbers cannot occur (`u32` fields).
    pub(crate) fn build(name: &str, spec: &TrafficShapingPolicy, warnings: &mut Vec<String>) -> Policy {
        let pattern = if spec.header_pattern.is_empty() || !spec.header_value.is_empty() {
            // headerValue takes precedence: the pattern is never consulted.
            Pattern::None
        } else if spec.header_pattern.len() > PATTERN_MAX {
            warnings.push(format!(
                "backend \"{name}\": trafficShapingPolicy.headerPattern is {} bytes, over the limit of {PATTERN_MAX}: \
                 header pattern rule disabled",
                spec.header_pattern.len()
            ));
            Pattern::Disabled
        } else {
            match RegexBuilder::new(&spec.header_pattern)
                .size_limit(PATTERN_SIZE_LIMIT)
                .dfa_size_limit(PATTERN_SIZE_LIMIT)
                .build()
            {
                Ok(re) => Pattern::Regex(re),
                Err(e) => {
                    let reason = e.to_string().lines().last().unwrap_or_default().trim().to_owned();
                    warnings.push(format!(
                        "backend \"{name}\": trafficShapingPolicy.headerPattern {:?} is not a valid pattern ({reason}): \
                         header pattern rule disabled",
                        spec.header_pattern
                    ));
                    Pattern::Disabled
                }
            }
        };
        Policy {
            header: spec.header.bytes().map(header_name_byte).collect(),
            header_value: spec.header_value.as_bytes().into(),
            pattern,
            cookie: spec.cookie.as_bytes().into(),
            weight: spec.weight,
            weight_total: if spec.weight_total > 100 { spec.weight_total } else { 100 },
        }
    }

    /// Rule 3.
    #[inline]
    fn by_header<H: Headers + ?Sized>(&self, headers: &H) -> Verdict {
        if self.header.is_empty() {
            return Verdict::FallThrough;
        }
        let Some(value) = headers.get(&self.header) else {
            return Verdict::FallThrough;
        };
        if !self.header_value.is_empty() {
            return if crate::bytes::eq(&self.header_value, value) {
                Verdict::Alternative
            } else {
                Verdict::FallThrough
            };
        }
        match &self.pattern {
            Pattern::Regex(re) if re.is_match(value) => Verdict::Alternative,
            Pattern::Regex(_) | Pattern::Disabled => Verdict::FallThrough,
            Pattern::None => always_never(value),
        }
    }

    /// Rule 4.
    #[inline]
    fn by_cookie(&self, cookie_header: &[u8]) -> Verdict {
        if self.cookie.is_empty() {
            return Verdict::FallThrough;
        }
        crate::cookie::find_first(cookie_header, &self.cookie).map_or(Verdict::FallThrough, always_never)
    }

    /// This alternative's share of the primary's traffic, in 2^-64 units.
    fn share(&self) -> u128 {
        (u128::from(self.weight) << 64) / u128::from(self.weight_total)
    }
}

#[inline]
fn always_never(value: &[u8]) -> Verdict {
    match value {
        b"always" => Verdict::Alternative,
        b"never" => Verdict::Primary,
        _ => Verdict::FallThrough,
    }
}

/// A primary backend's alternatives, ready for decisions.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Indices of the alternative backends in the snapshot, in list order.
    pub(crate) alternatives: Box<[u32]>,
    /// Cumulative weight shares in 2^-64 units: alternative `i` wins the weight rule
    /// when a uniform 64-bit draw is below `thresholds[i]` (and not below the one
    /// before). At most 2^64.
    thresholds: Box<[u128]>,
    /// Whether any alternative has a weight: no draw otherwise.
    weighted: bool,
    /// Whether the primary or an alternative uses cookie affinity (rules 1, 2), has a
    /// header rule (3), a cookie rule (4): the rules nobody has are skipped.
    affinity: bool,
    headers: bool,
    cookies: bool,
}

impl Plan {
    /// Build the plan of `primary` (at `position` in the document) from its
    /// alternatives' policies. The shares may not add up to more than the whole.
    pub(crate) fn build(primary: &Backend, alternatives: Vec<(u32, &Backend)>) -> Result<Plan, ConfigError> {
        let mut thresholds = Vec::with_capacity(alternatives.len());
        let mut sum: u128 = 0;
        for (_, alt) in &alternatives {
            sum += alt.policy.share();
            thresholds.push(sum);
        }
        if sum > 1u128 << 64 {
            let label = BackendLabel::Name(&primary.spec.name);
            let parts: Vec<String> = alternatives
                .iter()
                .filter(|(_, a)| a.policy.weight > 0)
                .map(|(_, a)| format!("{:?} {}/{}", a.spec.name, a.policy.weight, a.policy.weight_total))
                .collect();
            return Err(ConfigError::field(
                &label,
                "alternativeBackends",
                format!("canary weights add up to more than the whole traffic: {}", parts.join(" + ")),
            ));
        }
        let sticky = |b: &Backend| matches!(b.kind, AlgorithmKind::StickyBalanced | AlgorithmKind::StickyPersistent);
        Ok(Plan {
            weighted: sum > 0,
            affinity: sticky(primary) || alternatives.iter().any(|(_, a)| sticky(a)),
            headers: alternatives.iter().any(|(_, a)| !a.policy.header.is_empty()),
            cookies: alternatives.iter().any(|(_, a)| !a.policy.cookie.is_empty()),
            alternatives: alternatives.iter().map(|&(i, _)| i).collect(),
            thresholds: thresholds.into_boxed_slice(),
        })
    }

    /// Which alternative (position in [`Plan::alternatives`]) the request goes to;
    /// `None` for the primary. `backend(i)` gives the snapshot's backend `i`. Never
    /// allocates.
    #[inline]
    pub(crate) fn decide<'s, H: Headers + ?Sized>(
        &self,
        primary: &Backend,
        backend: impl Fn(u32) -> &'s Backend,
        cookie_header: &[u8],
        headers: &H,
    ) -> Option<usize> {
        let usable = |i: usize| {
            let b = backend(self.alternatives[i]);
            (!b.endpoints.is_empty()).then_some(b)
        };
        // 1, 2: affinity.
        if self.affinity && !cookie_header.is_empty() {
            if primary.algorithm.is_affinitized(cookie_header) {
                return None;
            }
            for i in 0..self.alternatives.len() {
                if usable(i).is_some_and(|b| b.algorithm.is_affinitized(cookie_header)) {
                    return Some(i);
                }
            }
        }
        // 3: headers, then 4: cookies, alternatives in list order.
        if self.headers {
            for i in 0..self.alternatives.len() {
                if let Some(b) = usable(i) {
                    match b.policy.by_header(headers) {
                        Verdict::Alternative => return Some(i),
                        Verdict::Primary => return None,
                        Verdict::FallThrough => {}
                    }
                }
            }
        }
        if self.cookies && !cookie_header.is_empty() {
            for i in 0..self.alternatives.len() {
                if let Some(b) = usable(i) {
                    match b.policy.by_cookie(cookie_header) {
                        Verdict::Alternative => return Some(i),
                        Verdict::Primary => return None,
                        Verdict::FallThrough => {}
                    }
                }
            }
        }
        // 5: weights.
        if !self.weighted {
            return None;
        }
        let draw = u128::from(crate::rng::next_u64());
        let i = self.thresholds.iter().position(|&t| draw < t)?;
        usable(i).map(|_| i)
    }
}

#[cfg(test)]
mod tests;
