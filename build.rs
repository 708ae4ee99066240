//! Keeps `include/ingress_lb.h` and the Rust exports in `src/ffi.rs` from drifting
//! apart: every prototype in the header's cdef block must have an export of the same
//! name with the same parameter and return types, and the other way round; the
//! result codes and size constants must agree. A mismatch fails the build with a
//! message naming the function. (A C program compiled against the header and linked
//! to the shared library checks behaviour at test time: `tests/c_abi.rs`.)
//!
//! Needs nothing but std: `cargo build` at the root stays free of libclang and nginx.

use std::collections::BTreeMap;
use std::fs;

fn main() {
    println!("cargo:rerun-if-changed=include/ingress_lb.h");
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=src/pick.rs");
    println!("cargo:rerun-if-changed=src/lib.rs");
    // For tests/c_abi.rs, which compiles a C program with the `cc` crate's compiler.
    for var in ["HOST", "TARGET"] {
        println!("cargo:rustc-env=ILB_BUILD_{var}={}", std::env::var(var).unwrap_or_default());
    }
    let header = fs::read_to_string("include/ingress_lb.h").expect("read include/ingress_lb.h");
    // The C ABI: src/ffi.rs and its submodules in src/ffi/, read as one text.
    let mut ffi = fs::read_to_string("src/ffi.rs").expect("read src/ffi.rs");
    if let Ok(dir) = fs::read_dir("src/ffi") {
        let mut files: Vec<_> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
            ffi.push_str(&fs::read_to_string(f).expect("read a file of src/ffi/"));
        }
    }
    let pick = fs::read_to_string("src/pick.rs").expect("read src/pick.rs");
    let mut problems = Vec::new();

    let c_fns = header_functions(&header);
    let rust_fns = rust_exports(&ffi);
    for (name, (c_ret, c_params)) in &c_fns {
        let Some((r_ret, r_params)) = rust_fns.get(name) else {
            problems.push(format!("{name}: declared in the header but not exported by src/ffi(/*).rs"));
            continue;
        };
        if c_to_rust(c_ret) != *r_ret {
            problems.push(format!("{name}: returns `{c_ret}` in the header but `{r_ret}` in Rust"));
        }
        if c_params.len() != r_params.len() {
            problems.push(format!("{name}: {} parameters in the header, {} in Rust", c_params.len(), r_params.len()));
            continue;
        }
        for (i, (c, r)) in c_params.iter().zip(r_params).enumerate() {
            let want = c_to_rust(c);
            // A result code passed in from C is taken as a plain int (any value is valid).
            let ok = want == *r || (want == "IlbResult" && r == "c_int");
            if !ok {
                problems.push(format!("{name}: parameter {i} is `{c}` in the header but `{r}` in Rust"));
            }
        }
    }
    for name in rust_fns.keys() {
        if !c_fns.contains_key(name) {
            problems.push(format!("{name}: exported by src/ffi(/*).rs but missing from the header"));
        }
    }

    // Result codes and other enums: same names, same values, same order.
    for (c_name, rust_name, prefix) in
        [("ilb_result", "IlbResult", "ILB_"), ("ilb_apply_state", "IlbApplyState", "ILB_APPLY_")]
    {
        let c_codes = header_enum(&header, c_name, prefix);
        let r_codes = rust_enum(&ffi, rust_name);
        if c_codes != r_codes {
            problems.push(format!("{c_name} differs: header {c_codes:?}, Rust {r_codes:?}"));
        }
    }

    // Sizes used in the header's struct layouts.
    let max_tried = rust_const(&pick, "MAX_TRIED");
    let addr_max = rust_const(&pick, "ADDR_MAX");
    let cookie_max = rust_const(&pick, "COOKIE_MAX");
    if !header.contains(&format!("char set_cookie[{cookie_max}];")) {
        problems.push(format!("ilb_peer.set_cookie must have {cookie_max} elements"));
    }
    for (define, value) in [("ILB_MAX_TRIED", max_tried), ("ILB_ADDR_MAX", addr_max), ("ILB_COOKIE_MAX", cookie_max)] {
        if header_define(&header, define) != Some(value) {
            problems.push(format!("#define {define} does not match Rust's value {value}"));
        }
    }
    let lib = fs::read_to_string("src/lib.rs").expect("read src/lib.rs");
    let inline = rust_const(&lib, "INLINE_APPLY_BYTES");
    if header_define(&header, "ILB_INLINE_APPLY_BYTES") != Some(inline) {
        problems.push(format!("#define ILB_INLINE_APPLY_BYTES does not match src/lib.rs's {inline}"));
    }
    let abi = rust_const_in(&ffi, "ABI_VERSION", "u32");
    if header_define(&header, "ILB_ABI_VERSION") != Some(abi) {
        problems.push(format!("#define ILB_ABI_VERSION does not match src/ffi.rs's ABI_VERSION {abi}"));
    }
    if !header.contains(&format!("uint64_t tried[{max_tried}];")) {
        problems.push(format!("ilb_pick_ctx.tried must have {max_tried} elements"));
    }
    if !header.contains(&format!("char addr[{addr_max}];")) {
        problems.push(format!("ilb_peer.addr must have {addr_max} elements"));
    }

    if !problems.is_empty() {
        panic!("include/ingress_lb.h and src/ffi.rs disagree:\n  {}", problems.join("\n  "));
    }
}

/// The cdef block of the header.
fn cdef_block(header: &str) -> &str {
    let start = header.find("/* -- begin cdef").expect("header has a begin cdef marker");
    let end = header.find("/* -- end cdef -- */").expect("header has an end cdef marker");
    &header[start..end]
}

/// Remove C comments.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        match rest[i..].find("*/") {
            Some(j) => rest = &rest[i + j + 2..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// name -> (return type, parameter types) for every prototype in the cdef block.
fn header_functions(header: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let code = strip_comments(cdef_block(header));
    let mut fns = BTreeMap::new();
    for stmt in code.split(';') {
        let stmt = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
        if stmt.starts_with("typedef") || stmt.contains('{') || stmt.contains('}') {
            continue;
        }
        let Some(open) = stmt.find('(') else { continue };
        let close = stmt.rfind(')').expect("prototype has a closing parenthesis");
        let (ret, name) = split_type_and_name(&stmt[..open]);
        let params = stmt[open + 1..close].trim();
        let params = if params == "void" || params.is_empty() {
            Vec::new()
        } else {
            params.split(',').map(|p| split_type_and_name(p.trim()).0).collect()
        };
        fns.insert(name, (ret, params));
    }
    fns
}

/// "const ilb_core *core" -> ("const ilb_core *", "core")
fn split_type_and_name(decl: &str) -> (String, String) {
    let decl = decl.trim();
    let cut = decl.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map(|i| i + 1).unwrap_or(0);
    (decl[..cut].trim().to_string(), decl[cut..].to_string())
}

/// The Rust spelling of a C type, e.g. "const ilb_core *" -> "*const IlbCore".
fn c_to_rust(c: &str) -> String {
    let stars = c.matches('*').count();
    let base_text = c.replace('*', " ");
    let words: Vec<&str> = base_text.split_whitespace().collect();
    let is_const = words.first() == Some(&"const");
    let base = words.iter().rfind(|w| **w != "const").copied().unwrap_or("void");
    let rust_base = match base {
        "void" if stars == 0 => return "()".to_string(),
        "void" => "c_void",
        "char" => "c_char",
        "int" => "c_int",
        "uint8_t" => "u8",
        "uint16_t" => "u16",
        "uint32_t" => "u32",
        "uint64_t" => "u64",
        "size_t" => "usize",
        "ilb_result" => "IlbResult",
        "ilb_apply_state" => "IlbApplyState",
        "ilb_core" => "IlbCore",
        "ilb_pick_ctx" => "PickCtx",
        "ilb_peer" => "IlbPeer",
        "ilb_request" => "IlbRequest",
        "ilb_backend_info" => "IlbBackendInfo",
        "ilb_header" => "IlbHeader",
        "ilb_stats" => "IlbStats",
        "double" => "f64",
        other => panic!("build.rs: no Rust mapping for C type `{other}`; add one"),
    };
    let mut out = String::new();
    for level in 0..stars {
        // Only the innermost pointer may point to const.
        out.push_str(if level + 1 == stars && is_const { "*const " } else { "*mut " });
    }
    out.push_str(rust_base);
    out
}

/// name -> (return type, parameter types) for every `extern "C" fn` in src/ffi.rs.
fn rust_exports(src: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let mut fns = BTreeMap::new();
    let mut rest = src;
    while let Some(i) = rest.find("extern \"C\" fn ") {
        rest = &rest[i + "extern \"C\" fn ".len()..];
        let open = rest.find('(').unwrap();
        let name = rest[..open].trim().to_string();
        // Parameters end at the matching parenthesis.
        let mut depth = 0;
        let mut close = open;
        for (j, ch) in rest[open..].char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let params: Vec<String> = rest[open + 1..close]
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| rust_type(p.split_once(':').expect("parameter has a type").1))
            .collect();
        let after = &rest[close + 1..];
        let body = after.find('{').unwrap();
        let sig_tail = after[..body].trim();
        let ret = match sig_tail.strip_prefix("->") {
            Some(t) => rust_type(t),
            None => "()".to_string(),
        };
        fns.insert(name, (ret, params));
    }
    fns
}

/// Normalise a Rust type: drop paths and extra spaces ("*const std::ffi::c_char" -> "*const c_char").
fn rust_type(t: &str) -> String {
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::new();
    let mut rest = t.as_str();
    loop {
        if let Some(r) = rest.strip_prefix("*const ") {
            out.push_str("*const ");
            rest = r;
        } else if let Some(r) = rest.strip_prefix("*mut ") {
            out.push_str("*mut ");
            rest = r;
        } else {
            break;
        }
    }
    out.push_str(rest.rsplit("::").next().unwrap().trim());
    out
}

/// ("OK", 0), ("NULL_ARGUMENT", 1), ... from `typedef enum ilb_result { ... }`
/// (`name` = "ilb_result", `prefix` = "ILB_").
fn header_enum(header: &str, name: &str, prefix: &str) -> Vec<(String, i64)> {
    let code = strip_comments(cdef_block(header));
    let start = code.find(&format!("typedef enum {name} ")).unwrap_or_else(|| panic!("header declares {name}"));
    let body = &code[code[start..].find('{').unwrap() + start + 1..code[start..].find('}').unwrap() + start];
    body.split(',')
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            let (n, val) = v.split_once('=').expect("every enum value is explicit");
            (n.trim().trim_start_matches(prefix).to_string(), val.trim().parse().unwrap())
        })
        .collect()
}

/// The same list from `pub enum IlbResult { Ok = 0, NullArgument = 1, ... }`.
fn rust_enum(src: &str, name: &str) -> Vec<(String, i64)> {
    let start = src.find(&format!("pub enum {name} ")).unwrap_or_else(|| panic!("src/ffi.rs declares {name}"));
    let body = &src[src[start..].find('{').unwrap() + start + 1..src[start..].find('}').unwrap() + start];
    body.split(',')
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            let (n, val) = v.split_once('=').expect("every enum value is explicit");
            (upper_snake(n.trim()), val.trim().parse().unwrap())
        })
        .collect()
}

fn upper_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

fn header_define(header: &str, name: &str) -> Option<usize> {
    header.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("#define ")?.strip_prefix(name)?;
        rest.trim().parse().ok()
    })
}

fn rust_const(src: &str, name: &str) -> usize {
    rust_const_in(src, name, "usize")
}

fn rust_const_in(src: &str, name: &str, ty: &str) -> usize {
    let pat = format!("pub const {name}: {ty} = ");
    let i = src.find(&pat).unwrap_or_else(|| panic!("build.rs: no `{pat}` found"));
    let rest = &src[i + pat.len()..];
    rest[..rest.find(';').unwrap()].trim().parse().unwrap()
}
