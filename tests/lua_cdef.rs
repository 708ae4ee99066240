//! The Lua front end binds the C ABI with `ffi.cdef`: its declarations must be the
//! header's cdef block, byte for byte, so LuaJIT never calls a function with a stale
//! signature or reads a struct with a stale layout.

fn block<'a>(text: &'a str, file: &str) -> &'a str {
    let start = text.find("/* -- begin cdef").unwrap_or_else(|| panic!("{file}: no begin cdef marker"));
    let end_marker = "/* -- end cdef -- */";
    let end = text.find(end_marker).unwrap_or_else(|| panic!("{file}: no end cdef marker")) + end_marker.len();
    &text[start..end]
}

#[test]
fn lua_cdef_is_the_header_block() {
    let root = env!("CARGO_MANIFEST_DIR");
    let header = std::fs::read_to_string(format!("{root}/include/ingress_lb.h")).unwrap();
    let lua = std::fs::read_to_string(format!("{root}/lua/ingress_lb/core.lua")).unwrap();
    let h = block(&header, "include/ingress_lb.h");
    let l = block(&lua, "lua/ingress_lb/core.lua");
    if h != l {
        let line =
            h.lines().zip(l.lines()).position(|(a, b)| a != b).unwrap_or(h.lines().count().min(l.lines().count()));
        panic!("lua/ingress_lb/core.lua's cdef differs from include/ingress_lb.h at line {} of the block", line + 1);
    }
}

/// `lua/ingress_lb/core.lua` passes the core's inline budget as a number of its own:
/// it must be the header's `ILB_INLINE_APPLY_BYTES` (build.rs ties that to the core).
#[test]
fn lua_inline_budget_is_the_header_one() {
    let root = env!("CARGO_MANIFEST_DIR");
    let header = std::fs::read_to_string(format!("{root}/include/ingress_lb.h")).unwrap();
    let lua = std::fs::read_to_string(format!("{root}/lua/ingress_lb/core.lua")).unwrap();
    let value = |text: &str, prefix: &str| -> String {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix}"));
        line[prefix.len()..].trim().to_string()
    };
    assert_eq!(value(&lua, "_M.INLINE_APPLY_BYTES ="), value(&header, "#define ILB_INLINE_APPLY_BYTES"));
}
